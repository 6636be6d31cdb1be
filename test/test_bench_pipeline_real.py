"""Smoke run of the real-model pipeline benchmark (the full one: vla-ros bench pipeline --real).

Process mode only, one-second phases, a small Octo-style checkpoint instead of the
~390 MB one: the shipped OpenVLA runs, the node swaps to another family and back, and the
benchmark's bookkeeping (commands, chunks per policy, model compute from the timing log,
the driver's watchdog log) produces every number. Targets are the benchmark's business
(they need a quiet machine); this checks the benchmark works and nothing crashed.
"""

import json

import pytest

pytestmark = [pytest.mark.graph, pytest.mark.slow]


def test_real_pipeline_benchmark_smoke(tmp_path):
    from vla_ros.benchmarking import pipeline_real

    result = pipeline_real.run(phase=1.0, modes=('process',), heavy=pipeline_real.SMOKE_OCTO,
                               log_dir=str(tmp_path), load_timeout=120.0)
    print(json.dumps(result, indent=1))
    run = result['process']
    assert run['commands'] > 20 and 9.0 < run['command_hz'] < 11.0
    assert set(run['per_policy']) == {'openvla', 'octo'}
    for policy in run['per_policy'].values():
        assert policy['chunks'] > 0 and policy['model_compute_ms_p50'] > 0
        assert policy['pipeline_overhead_ms_p50'] is not None
    assert run['swap_to_heavy_octo_s'] > 0 and run['swap_back_to_openvla_s'] > 0
    assert run['inference_node_exit_code'] == 0 and run['tracebacks_in_node_log'] == 0
    # The control thread's trace was written at shutdown and read back.
    assert run['control_thread_wake_lateness_ms_p50'] is not None
    assert run['control_tick_duration_ms_p99'] is not None
    assert len(run['policy_process_peak_rss_mb']) >= 1
    assert set(result['targets_process_mode']) == {
        'control_period_error_ms_p99 <= 2', 'control_period_error_ms_p99_at_subscriber <= 3',
        'driver_watchdog_trips == 0', 'pipeline_overhead_ms_p50 <= 5 (every policy)'}
