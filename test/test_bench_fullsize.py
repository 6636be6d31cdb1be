"""benchmarks/bench_fullsize.py runs (tiny preset on CPU), so its GPU path cannot rot.

The GPU run itself builds the full presets inside ``torch.device('cuda')``; building them
inside ``torch.device('meta')`` here shows that construction honours the device context
(no parameter is created on the CPU first) at the full sizes.
"""

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip('torch')

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / 'benchmarks'))

import bench_fullsize  # noqa: E402


def test_tiny_run_on_cpu_reports_every_family():
    report = bench_fullsize.main(['--device', 'cpu', '--preset', 'tiny', '--runs', '1',
                                  '--warmup', '0', '--batch', '2', '--bandwidth-gbs', '50',
                                  '--no-save'])
    families = [r['family'] for r in report['results']]
    assert families == list(bench_fullsize.FAMILIES)
    for result in report['results']:
        assert result['param_devices'] == ['cpu']
        assert result['param_dtypes'] == ['torch.bfloat16']
        assert result['predict_chunk_ms_batch1'] > 0
        assert result['weight_bytes'] == 2 * result['parameters']
    openvla = report['results'][0]
    assert [d['batch'] for d in openvla['decoder']] == [1, 2]
    for step in openvla['decoder']:
        assert step['prefill_ms'] > 0 and step['decode_step_ms'] > 0
        floor = step['weight_bytes_per_decoded_token'] / 50e9 * 1e3
        assert step['bandwidth_floor_ms_per_token'] == pytest.approx(floor)


@pytest.mark.parametrize('family, billions', [('openvla', 7.54), ('pi0_style', 3.24),
                                              ('rt2', 2.46)])
def test_full_presets_are_built_in_the_device_context_in_bfloat16(family, billions):
    policy = bench_fullsize.build_on_device(family, 'full', torch.device('meta'))
    params = list(policy.model.parameters())
    assert {p.device.type for p in params} == {'meta'}
    assert {p.dtype for p in params} == {torch.bfloat16}
    assert sum(p.numel() for p in params) / 1e9 == pytest.approx(billions, abs=0.01)
