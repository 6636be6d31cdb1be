"""Aggregate rollout results into a report, and draw a contact sheet of episodes."""

from __future__ import annotations

import math
import textwrap
from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np

__all__ = ['summarize', 'contact_sheet']

_GREEN, _RED = (40, 170, 60), (210, 40, 40)  # RGB
_BORDER = 3


def _rate(hits: int, total: int) -> float:
    return round(hits / total, 4) if total else math.nan


def _group(results, key) -> dict:
    groups = defaultdict(list)
    for r in results:
        groups[key(r)].append(r)
    return {
        k: {'episodes': len(v), 'successes': sum(r.success for r in v),
            'success_rate': _rate(sum(r.success for r in v), len(v))}
        for k, v in sorted(groups.items())
    }


def _at_end(rs) -> dict:
    """First success beside success at the end of the horizon, and gripper chatter."""
    from vla_ros.actions.gripper import chatter_events

    ran = [r for r in rs if r.until_horizon]
    out = {'success_at_end': sum(r.success_at_end for r in ran) if ran else None,
           'success_at_end_rate': _rate(sum(r.success_at_end for r in ran), len(ran))
           if ran else None}
    ok = [r for r in rs if r.first_success_step is not None]
    out['mean_first_success_step'] = round(float(np.mean(
        [r.first_success_step for r in ok])), 2) if ok else None
    out['policy_said_done'] = int(sum(r.terminated_step is not None for r in rs))
    events = [chatter_events(r.gripper_commands, r.control_period) for r in rs]
    out['gripper_chatter_events'] = int(sum(len(e) for e in events))
    out['episodes_with_gripper_chatter'] = int(sum(bool(e) for e in events))
    return out


def summarize(results, wall_time_s: float | None = None) -> dict:
    """Success rates per task / instruction / template / target, lengths and latencies.

    ``success_rate`` counts first successes; episodes run to the horizon
    (``until_horizon``) also give ``success_at_end_rate``: the task still achieved at the
    last tick (object still lifted, hand still at the target). ``gripper_chatter_events``
    counts reversals of the thresholded gripper command within 0.5 s after a grasp.

    ``mean_episode_length`` counts control periods over all episodes (failures run to the
    step limit or their wrong-object stop); ``mean_inference_latency_s`` averages the wall
    time of every ``predict_chunk`` call.
    """
    if not results:
        raise ValueError('no results to summarize')
    calls = [t for r in results for t in r.inference_wall_s]
    per_task = {}
    for task in dict.fromkeys(r.task for r in results):
        rs = [r for r in results if r.task == task]
        ok = [r for r in rs if r.success]
        task_calls = [t for r in rs for t in r.inference_wall_s]
        per_task[task] = {
            'episodes': len(rs), 'successes': len(ok),
            'success_rate': _rate(len(ok), len(rs)),
            'wrong_object_rate': _rate(sum(r.wrong_object for r in rs), len(rs)),
            'mean_episode_length': round(float(np.mean([r.steps for r in rs])), 2),
            'mean_success_length': round(float(np.mean([r.steps for r in ok])), 2)
            if ok else None,
            'mean_inference_latency_s': float(np.mean(task_calls)) if task_calls else None,
            **_at_end(rs),
        }
    report = {
        'episodes': len(results),
        'successes': sum(r.success for r in results),
        'success_rate': _rate(sum(r.success for r in results), len(results)),
        'wrong_object_rate': _rate(sum(r.wrong_object for r in results), len(results)),
        **_at_end(results),
        'mean_episode_length': round(float(np.mean([r.steps for r in results])), 2),
        'mean_inference_latency_s': float(np.mean(calls)) if calls else None,
        'p95_inference_latency_s': float(np.percentile(calls, 95)) if calls else None,
        'inference_calls': len(calls),
        'hold_ticks': int(sum(r.hold_ticks for r in results)),
        'policy_errors': int(sum(r.policy_errors for r in results)),
        'first_error': next((r.first_error for r in results if r.first_error), ''),
        'per_task': per_task,
        'per_template': _group(results, lambda r: f'{r.task}: {r.template}'),
        'per_target': _group(results, lambda r: f'{r.task}: {r.target}'),
        'per_instruction': _group(results, lambda r: r.instruction),
        'failures': [{'task': r.task, 'seed': r.seed, 'instruction': r.instruction,
                      'wrong_object': r.wrong_object, 'steps': r.steps,
                      'metrics': r.metrics} for r in results if not r.success],
        'lost_after_success': [{'task': r.task, 'seed': r.seed, 'instruction': r.instruction,
                                'first_success_step': r.first_success_step,
                                'steps': r.steps, 'metrics': r.metrics}
                               for r in results if r.success and r.until_horizon
                               and not r.success_at_end],
    }
    if wall_time_s is not None:
        report['wall_time_s'] = round(float(wall_time_s), 2)
        report['episodes_per_s'] = round(len(results) / max(wall_time_s, 1e-9), 2)
    return report


def _framed(img: np.ndarray, colour) -> np.ndarray:
    return cv2.copyMakeBorder(np.ascontiguousarray(img), _BORDER, _BORDER, _BORDER, _BORDER,
                              cv2.BORDER_CONSTANT, value=colour)


def _caption(width: int, lines: list[str], colour) -> np.ndarray:
    line_h = 13
    strip = np.full((line_h * len(lines) + 6, width, 3), 255, np.uint8)
    for i, text in enumerate(lines):
        cv2.putText(strip, text, (4, line_h * (i + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.36,
                    colour if i == 0 else (30, 30, 30), 1, cv2.LINE_AA)
    return strip


def _cell(result, tile) -> np.ndarray:
    colour = _GREEN if result.success else _RED
    frames = []
    for img in (result.first_frame, result.last_frame):
        img = cv2.resize(img, tile, interpolation=cv2.INTER_AREA) if img.shape[1::-1] != tile \
            else img
        frames.append(_framed(img, colour))
    pair = np.hstack(frames)
    verdict = 'OK' if result.success else ('WRONG OBJECT' if result.wrong_object else 'FAIL')
    chars = max(10, pair.shape[1] // 7)
    lines = [f'{verdict}  {result.task} #{result.seed}  {result.steps} steps']
    lines += textwrap.wrap(result.instruction, chars)[:2]
    return np.vstack([pair, _caption(pair.shape[1], lines, colour)])


def contact_sheet(results, path, columns: int = 4, tile=(128, 128)) -> Path:
    """Write a PNG grid: per episode its first and last front frames, framed green/red.

    Results need ``first_frame``/``last_frame`` (rollout with ``frame_size``). Each cell is
    captioned with the verdict, task, seed, length and instruction.
    """
    results = [r for r in results if r.first_frame is not None and r.last_frame is not None]
    if not results:
        raise ValueError('no episode has frames; run the rollouts with frame_size set')
    if columns < 1:
        raise ValueError(f'columns must be >= 1, got {columns}')
    tile = (int(tile[0]), int(tile[1]))
    cells = [_cell(r, tile) for r in results]
    h = max(c.shape[0] for c in cells)
    w = cells[0].shape[1]
    cells = [np.vstack([c, np.full((h - c.shape[0], w, 3), 255, np.uint8)]) for c in cells]
    columns = min(columns, len(cells))
    blank = np.full((h, w, 3), 255, np.uint8)
    cells += [blank] * (-len(cells) % columns)
    pad = np.full((h, 6, 3), 255, np.uint8)
    rows = [np.hstack([x for c in cells[i:i + columns] for x in (c, pad)])
            for i in range(0, len(cells), columns)]
    sheet = np.vstack(rows)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR)):
        raise OSError(f'could not write {path}')
    return path
