"""The strict-loading report shared by vla_ros's weight loaders.

A model never loads silently wrong: a loader compares the stored tensors with the model's
and reports every missing, unexpected and mis-shaped tensor in one
:class:`PolicyLoadError` (:func:`weight_mismatch_error`), before anything is assigned.
Family specifics (key aliases, tied weights) are resolved by the caller first.
"""

from __future__ import annotations

from vla_ros.policies.contract import PolicyLoadError

LIST_LIMIT = 20  # names shown per problem kind; further ones are counted


def summary(names, limit: int = LIST_LIMIT) -> str:
    """``a, b, c ... and N more``: the first ``limit`` of ``names``, sorted."""
    names = sorted(names)
    more = f' ... and {len(names) - limit} more' if len(names) > limit else ''
    return ', '.join(names[:limit]) + more


def weight_mismatch_error(where, what: str, missing=(), unexpected=(),
                          mismatched=()) -> PolicyLoadError | None:
    """One error naming every missing, unexpected and mis-shaped tensor (None if none).

    ``what`` says what the weights failed to match (e.g. ``the pi05 architecture of
    config.json``); ``mismatched`` entries are already formatted with both shapes.
    """
    problems = [f'{kind} {len(items)}: {summary(items)}'
                for kind, items in (('missing', missing), ('unexpected', unexpected),
                                     ('mis-shaped', mismatched)) if items]
    if not problems:
        return None
    return PolicyLoadError(f'{where}: weights do not match {what}; ' + '; '.join(problems))
