"""The synthetic pipeline benchmark's split of stamp -> chunk into its parts."""

import pytest

from vla_ros.benchmarking.pipeline import _add_parts
from vla_ros.runtime.engine import read_timing_log


def test_parts_add_up_to_stamp_to_chunk(tmp_path):
    log = tmp_path / 'timing.txt'
    # Frame stamped at 100.0: the worker sent it at +1.5 ms, the policy spent 2 ms on
    # preprocess and 300 ms in its call, the chunk was back at the worker at +304.5 ms.
    log.write_text('scripted 100.000000000 0.002000 0.300000\n'
                   '@worker 100.000000000 100.001500 100.304500\n'
                   'scripted 200.000000000 0.002000 0.300000\n')
    timing = read_timing_log(str(log))
    parts = {k: [] for k in ('stamp_to_worker', 'preprocess', 'model', 'process_hop',
                             'chunk_to_subscriber')}
    assert _add_parts(parts, timing, 100.0, 100.3050)
    assert parts['stamp_to_worker'] == [pytest.approx(0.0015)]
    assert parts['process_hop'] == [pytest.approx(0.001)]
    assert parts['chunk_to_subscriber'] == [pytest.approx(0.0005)]
    total = sum(parts[k][0] for k in parts)
    assert total == pytest.approx(100.3050 - 100.0)
    # Thread mode (no worker line): the policy's times only; unknown frames: nothing.
    assert _add_parts(parts, timing, 200.0, 200.31)
    assert len(parts['model']) == 2 and len(parts['process_hop']) == 1
    assert not _add_parts(parts, timing, 300.0, 300.31)


def test_bench_output_writes_the_printed_json(tmp_path, monkeypatch, capsys):
    # `vla-ros bench pipeline --output F` (not only --real) saves what it prints.
    import json

    from vla_ros import cli
    from vla_ros.benchmarking import pipeline

    calls = []
    monkeypatch.setattr(pipeline, 'run', lambda latency, duration: calls.append(
        (latency, duration)) or {'benchmark': 'pipeline', 'command_hz': 10.0})
    out = tmp_path / 'bench.json'
    assert cli.main(['bench', 'pipeline', '--duration', '2', '--output', str(out)]) == 0
    assert calls == [(0.3, 2.0)]
    assert json.loads(out.read_text()) == json.loads(capsys.readouterr().out)
    # A directory that is not there is said before the run, which then does not start.
    missing = tmp_path / 'nowhere' / 'bench.json'
    assert cli.main(['bench', 'pipeline', '--output', str(missing)]) == 2
    assert 'no such directory' in capsys.readouterr().err and len(calls) == 1
