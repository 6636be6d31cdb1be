"""Diagnose whether the pixel token's wrist head sees a cube's yaw relative to the hand.

For cube pick-up frames with the fingers open (every ``--stride``-th frame of the
episodes in ``--data``), runs the OpenVLA policy in ``--model`` on the recorded frame,
takes the wrist camera's first pixel-readout head, computes its fourth-order angular
moment (``OpenVlaPixelTargetReadout.orientation_features``) and fits cos/sin of four
times the cube's yaw relative to the hand from it by least squares. Prints JSON: the
fit's median yaw error (chance is 22.5 deg) and correlations, for all frames and for
those near grasp height. docs/results.md quotes it on DAgger round seeds 110000:

    python scripts/diagnose_wrist_orientation.py --model vla_ros/models/openvla_sim \
        --data build/shipped/dagger_110000
"""

import argparse
import glob
import json
import math
import os

import numpy as np

os.environ.setdefault('MUJOCO_GL', 'egl')


def _fit(relative_yaw: np.ndarray, moments: np.ndarray) -> dict:
    target = np.stack([np.cos(4 * relative_yaw), np.sin(4 * relative_yaw)], 1)
    design = np.c_[moments, np.ones(len(moments))]
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    fitted = design @ coef
    miss = np.angle(np.exp(1j * (np.arctan2(fitted[:, 1], fitted[:, 0]) - 4 * relative_yaw)))
    return {'frames': int(len(relative_yaw)),
            'median_yaw_error_deg': round(float(np.degrees(np.median(np.abs(miss)) / 4)), 1),
            'corr_cos': round(float(np.corrcoef(fitted[:, 0], target[:, 0])[0, 1]), 2),
            'corr_sin': round(float(np.corrcoef(fitted[:, 1], target[:, 1])[0, 1]), 2),
            'median_moment_magnitude': round(float(np.median(np.hypot(*moments.T))), 2)}


def main() -> None:
    """Parse the arguments, collect the frames, print the fits as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--model', required=True, help='OpenVLA checkpoint with a pixel readout')
    parser.add_argument('--data', required=True, help='directory of episode_*.npz')
    parser.add_argument('--stride', type=int, default=4)
    parser.add_argument('--max-frames', type=int, default=250)
    parser.add_argument('--low-z', type=float, default=0.1, help='"near grasp height" (m)')
    args = parser.parse_args()

    import torch

    from vla_ros.datasets.episodes import Episode
    from vla_ros.evaluation.rollout import make_sim
    from vla_ros.policies.contract import Observation
    from vla_ros.policies.registry import make_policy
    from vla_ros.sim.kinematics import quat_to_rotation

    torch.set_num_threads(1)
    policy = make_policy('openvla', model_path=args.model)
    readout = policy.model.pixel_readout
    if readout is None:
        raise SystemExit(f'{args.model} has no pixel target readout')
    calls = []
    readout.register_forward_hook(lambda module, inputs, output: calls.append(inputs))
    sim = make_sim((64, 64))
    rows = []
    try:
        for path in sorted(glob.glob(os.path.join(args.data, 'episode_*.npz'))):
            episode = Episode.load(path)
            meta = episode.metadata or {}
            if meta.get('task') != 'pick_up' or 'cube' not in meta.get('target', ''):
                continue
            cube_yaw = float(meta['placements'][meta['target']][2])
            for t in range(0, len(episode), args.stride):
                if episode.proprio[t, 7] < 0.9:  # fingers closing: the grasp is decided
                    continue
                sim.set_arm_configuration(episode.proprio[t, :7], episode.proprio[t, 7])
                position, quat = sim.ee_pose()
                rot = quat_to_rotation(quat)
                calls.clear()
                policy.predict_chunk(Observation(
                    {c: episode.images[c][t] for c in policy.spec.camera_names},
                    meta['instruction'], proprio=episode.proprio[t]))
                pixels, instruction = calls[policy.spec.camera_names.index('wrist')]
                with torch.no_grad():
                    scores, grid = readout._attend(pixels, instruction)
                    moment = readout.orientation_features(scores.softmax(-1), grid)[0, :2]
                rows.append((cube_yaw - math.atan2(rot[1, 0], rot[0, 0]), position[2],
                             *moment.numpy()))
            if len(rows) >= args.max_frames:
                break
    finally:
        sim.close()
        policy.close()
    table = np.array(rows)
    low = table[:, 1] < args.low_z
    print(json.dumps({'model': args.model, 'data': args.data, 'chance_deg': 22.5,
                      'all': _fit(table[:, 0], table[:, 2:]),
                      'near_grasp_height': _fit(table[low, 0], table[low, 2:])}, indent=1))


if __name__ == '__main__':
    main()
