"""Regression report: report.json, report.md and a plot of recorded vs replayed commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vla_ros.bags.regress import RegressionResult

_UNITS = {'vx': 'm/s', 'vy': 'm/s', 'vz': 'm/s', 'wx': 'rad/s', 'wy': 'rad/s',
          'wz': 'rad/s', 'gripper': 'opening', 'base_vx': 'm/s', 'base_vy': 'm/s',
          'base_wz': 'rad/s'}


def plot_commands(result: RegressionResult, path: Path) -> Path:
    """One row per compared dimension: recorded (solid) and replayed (dashed) over time."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    # Dimensions that stayed zero on both sides and passed add nothing to look at.
    dims = [d for d in result.dimensions if not d.passed or np.nanmax(np.abs(np.concatenate(
        [result.recorded[:, result.dimension_names.index(d.name)],
         result.replayed[:, result.dimension_names.index(d.name)]]))) > 0] or result.dimensions[:1]
    rows = max(1, len(dims))
    fig, axes = plt.subplots(rows, 1, figsize=(9, 1.7 * rows + 1.0), sharex=True,
                             squeeze=False)
    for ax, dim in zip(axes[:, 0], dims, strict=False):
        j = result.dimension_names.index(dim.name)
        ax.plot(result.times, result.recorded[:, j], '-', lw=1.6, label='recorded')
        ax.plot(result.times, result.replayed[:, j], '--', lw=1.2, label='replayed')
        if dim.exceed:
            bad = np.abs(result.recorded[:, j] - result.replayed[:, j]) > dim.tolerance
            ax.plot(result.times[bad], result.replayed[bad, j], 'rx', ms=4,
                    label='beyond tolerance')
        status = 'ok' if dim.passed else 'FAIL'
        ax.set_ylabel(f'{dim.name}\n({_UNITS.get(dim.name, "joint units")})', fontsize=8)
        ax.set_title(f'{dim.name}: max |err| {dim.max_abs_error:.3g} '
                     f'(tol {dim.tolerance:.3g}) {status}', fontsize=8, loc='left')
        ax.tick_params(labelsize=7)
    axes[0, 0].legend(loc='upper right', fontsize=7)
    axes[-1, 0].set_xlabel('time since first recorded tick (s)')
    verdict = 'PASSED' if result.passed else 'REGRESSION'
    fig.suptitle(f'{Path(result.bag).name}: {verdict} ({result.ticks} ticks, policy '
                 f'{result.policy}, {result.schedule} schedule)', fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def markdown(result: RegressionResult) -> str:
    """A short human-readable report."""
    lines = [f'# Bag regression: {"PASSED" if result.passed else "REGRESSION"}', '',
             f'- bag: `{result.bag}`', f'- policy: `{result.policy}`',
             f'- schedule: {result.schedule}; {result.ticks} control ticks compared, '
             f'{result.chunks_replayed} chunks replayed', '',
             '| dimension | tolerance | max abs error | RMSE | ticks over | first over (s) '
             '| presence mismatches | |', '|---|---|---|---|---|---|---|---|']
    for d in result.dimensions:
        first = '' if d.first_exceed_time is None else f'{d.first_exceed_time:.3f}'
        lines.append(f'| {d.name} | {d.tolerance:.3g} | {d.max_abs_error:.3g} | '
                     f'{d.rmse:.3g} | {d.exceed} | {first} | {d.presence_mismatch} | '
                     f'{"ok" if d.passed else "FAIL"} |')
    if result.notes:
        lines += ['', '## Notes', ''] + [f'- {n}' for n in result.notes[:50]]
    lines += ['', '![recorded vs replayed](commands.png)', '']
    return '\n'.join(lines)


def write_report(result: RegressionResult, directory: str | Path) -> dict[str, Path]:
    """Write report.json, report.md and commands.png into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = {'json': out / 'report.json', 'markdown': out / 'report.md',
             'plot': out / 'commands.png'}
    paths['json'].write_text(json.dumps(result.to_json(), indent=1, default=str))
    paths['markdown'].write_text(markdown(result))
    plot_commands(result, paths['plot'])
    return paths
