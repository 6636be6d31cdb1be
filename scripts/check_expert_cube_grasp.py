"""How much the expert's cube grasp depends on its yaw and on centring (prints JSON).

Runs the scripted expert on the first ``--episodes`` pick-up episodes (train split, seeds
0..) that name a cube, with the grasp yaw either the hand's own (the default) or turned
square to a face (``--align``). ``--offset M`` makes the expert aim M metres off the cube's
centre (a per-episode random direction, fixed for the episode), standing in for a learned
policy's imprecision; ``--noise`` is DART action noise as in ``vla-ros collect``.

    python scripts/check_expert_cube_grasp.py [--align] [--offset 0.01] [--noise 0.3]
"""

import argparse
import json
import math
import os

os.environ.setdefault('MUJOCO_GL', 'egl')

import numpy as np  # noqa: E402

from vla_ros.evaluation.rollout import make_sim, rollout  # noqa: E402
from vla_ros.sim.expert import ScriptedExpert  # noqa: E402
from vla_ros.sim.tasks import get_task  # noqa: E402


class OffCentreExpert(ScriptedExpert):
    """The expert, believing the (not yet held) object ``offset`` metres from where it is."""

    def __init__(self, offset: float, direction: float, **config):
        super().__init__(**config)
        self._shift = offset * np.array([math.cos(direction), math.sin(direction), 0.0])

    def _read_state(self):
        belief = super()._read_state()
        if belief.held:
            return belief
        return type(belief)(belief.ee, belief.rot, belief.obj + self._shift, belief.obj_yaw,
                            belief.held, belief.time)


def main() -> None:
    """Run the episodes and print one JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--episodes', type=int, default=40)
    parser.add_argument('--align', action='store_true', help='turn square to a cube face')
    parser.add_argument('--offset', type=float, default=0.0, help='metres off centre')
    parser.add_argument('--noise', type=float, default=0.0, help='DART action noise')
    args = parser.parse_args()
    task = get_task('pick_up')
    sim = make_sim((64, 64))
    per_cube: dict[str, list[int]] = {}
    seed = attempted = 0
    try:
        while attempted < args.episodes:
            instance = task.sample(seed, 'train')
            seed += 1
            if 'cube' not in instance.target:
                continue
            direction = np.random.default_rng(seed).uniform(0.0, 2.0 * math.pi)
            expert = OffCentreExpert(args.offset, direction, align_cube_faces=args.align)
            result = rollout(expert, instance, sim=sim, action_noise=args.noise,
                             noise_seed=seed)
            counts = per_cube.setdefault(instance.target, [0, 0])
            counts[0] += bool(result.success)
            counts[1] += 1
            attempted += 1
    finally:
        sim.close()
    print(json.dumps({'align_cube_faces': args.align, 'offset_m': args.offset,
                      'action_noise': args.noise, 'last_seed': seed - 1,
                      'lifted': sum(c[0] for c in per_cube.values()), 'episodes': attempted,
                      'per_cube': {k: f'{s}/{n}' for k, (s, n) in per_cube.items()}}))


if __name__ == '__main__':
    main()
