#!/bin/bash
# Stage 12, runs 3-7 (issue 20): rounds that continue the previous checkpoint.
# Each round collects pick-up episodes (kind 'grasp': the expert with DART noise, ending at
# the lift; kind 'dagger': the previous checkpoint drives to the horizon, the expert
# labels), trains 1,000 steps on everything so far, and evaluates 100 unseen layouts per
# task. Run 2's checkpoint and data come from scripts/train_shipped_policies.sh stage 12.
#
#   scripts/stage12_rounds.sh ROUND KIND EPISODES SEED_A SEED_B TRAIN_SEED PREVIOUS WORK
#
# as run (runs 1-6 in the simulator whose zero twist still drifted, see docs/results.md):
#   3 grasp  150 330000 330500 21 WORK/run2/checkpoints/step_00001000/policy WORK
#   4 grasp  250 340000 340500 22 WORK/run3/openvla_run3 WORK
#   5 dagger 100 350000 350500 23 WORK/run4/openvla_run4 WORK
#   6 dagger 150 360000 360500 24 WORK/run5/openvla_run5 WORK
#   7 dagger 150 370000 370500 25 WORK/run6/openvla_run6 WORK   (shipped as openvla_sim)
# WORK holds stage12/sim_reach_pick_up (run 2's data) and one runN directory per round.
set -eu
if [ $# -ne 8 ] || { [ "$2" != grasp ] && [ "$2" != dagger ]; } || [ ! -d "$7" ]; then
  echo "usage: $0 ROUND grasp|dagger EPISODES SEED_A SEED_B TRAIN_SEED PREVIOUS_CHECKPOINT WORK" >&2
  echo "  (got $# arguments; PREVIOUS_CHECKPOINT must be an existing directory)" >&2
  exit 2
fi
ROUND=$1 KIND=$2 EPISODES=$3 SEED_A=$4 SEED_B=$5 TRAIN_SEED=$6 PREVIOUS=$7 WORK=$8
VLA=${VLA:-vla-ros}
R=$WORK/run$ROUND
mkdir -p "$R"
for seed in $SEED_A $SEED_B; do
  if [ "$KIND" = grasp ]; then
    extra=(--action-noise 0.3 --stop-at-success)
  else
    extra=(--policy openvla --model-path "$PREVIOUS")
  fi
  OMP_NUM_THREADS=1 $VLA collect --task pick_up --episodes "$EPISODES" --seed "$seed" \
    --image-size 64 "${extra[@]}" --output "$R/${KIND}_$seed" --no-progress --json \
    > "$R/${KIND}_$seed.json" &
done
wait
# Everything so far: run 2's data and every earlier round's episodes, linked by name.
mkdir -p "$R/data/sim_reach_pick_up"
for dir in "$WORK/stage12/sim_reach_pick_up" "$WORK"/run*/grasp_* "$WORK"/run*/dagger_*; do
  [ -d "$dir" ] || continue
  n=$(basename "$(dirname "$dir")")_$(basename "$dir")
  for f in "$dir"/episode_*.npz; do
    ln -sf "$(realpath "$f")" "$R/data/sim_reach_pick_up/episode_${n}_$(basename "$f" .npz | sed 's/^episode_//').npz"
  done
done
OMP_NUM_THREADS=2 $VLA train --full --batch-size 32 --weight-decay 0.01 --no-progress \
  --policy openvla --model-path "$PREVIOUS" --keep-statistics --done-label \
  --done-hold-steps 10 --relabel-from-state --data "$R/data/sim_reach_pick_up" \
  --output "$R/openvla_run$ROUND" --steps 1000 --lr 1e-4 --warmup-steps 50 \
  --seed "$TRAIN_SEED" --counterfactual 0.25 --checkpoint-every 500 > "$R/train.json"
for task in pick_up reach; do
  OMP_NUM_THREADS=1 $VLA eval --policy openvla --model-path "$R/openvla_run$ROUND" \
    --episodes 100 --seed 5000 --tasks $task --split train --gripper-mode binary --json \
    --no-progress > "$R/eval_$task.json" &
done
wait
