#!/usr/bin/env bash
# Reproduce the policies shipped in vla_ros/models/: expert demonstrations with DART noise
# -> OpenVLA in stages (from scratch; grown by a target token; two DAgger rounds; grown
# by a pixel target token; a third DAgger round; relabelled for the cube grasp; a fourth
# DAgger round; the relabelling fix) and Octo -> closed-loop evaluation. Seeds are fixed throughout.
#
#   bash scripts/train_shipped_policies.sh [WORK_DIR]      (default: build/shipped)
#
# Steps can be skipped with SKIP_COLLECT=1 / SKIP_TRAIN=1 / SKIP_EVAL=1. Wall times on the
# 2-core CPU this was made on are in docs/results.md (about 4 h in all).
# The shipped checkpoints are $WORK/openvla_relabel_fixed (vla_ros/models/openvla_sim)
# and $WORK/octo_sim.
# The shipped lineage ran stages 1-7 with the expert as it was then: narrower gates
# (stages 1-5) and cubes grasped square to a face (stages 1-7; now
# ExpertConfig.align_cube_faces, off by default), and stages 7-9 relabelled frames after
# the arm had touched an object (fixed for stage 10). A rerun uses today's code throughout,
# so it repeats the procedure, not the shipped weights bit for bit.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${1:-build/shipped}
VLA=${VLA:-.venv/bin/vla-ros}
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 MUJOCO_GL=${MUJOCO_GL:-egl}
mkdir -p "$WORK"

# One directory of episode_*.npz from several collection directories (symlinks; the
# first keeps its episode numbers, the next get the prefixes 1, 2, ..., as the shipped
# run did, so the sample order and hence the batches are the same). The directory name
# becomes the checkpoints' statistics key (unnorm_key).
merge() {
    local out=$1; shift
    mkdir -p "$out"
    local prefix=''
    for dir in "$@"; do
        for f in "$dir"/episode_*.npz; do
            local n; n=$(basename "$f" .npz); n=${n#episode_}
            ln -sf "$(realpath "$f")" "$out/episode_${prefix}${n}.npz"
        done
        prefix=$((${prefix:-0} + 1))
    done
}

DATA="$WORK/sim_reach_pick_up"
if [[ -z "${SKIP_COLLECT:-}" ]]; then
    # Train split only (training templates and layout stream), seeds 0..1499 per task, in
    # two parallel batches. Each episode executes the expert with DART noise of a scale
    # drawn from [0, 0.3] x the action bounds; the recorded labels are the clean actions.
    # Pick-up episodes the noise made fail are dropped (about 1 in 5).
    for batch in 0 750; do
        OMP_NUM_THREADS=1 "$VLA" collect --task reach pick_up --episodes 750 --seed "$batch" \
            --image-size 64 --action-noise 0.3 --output "$WORK/demos_$batch" --no-progress \
            --json > "$WORK/collect_$batch.json" &
    done
    wait
    merge "$DATA" "$WORK/demos_0" "$WORK/demos_750"
fi

train() { OMP_NUM_THREADS=${THREADS:-2} "$VLA" train --full --batch-size 32 \
    --weight-decay 0.01 --no-progress "$@"; }

# DAgger round: the policy in $1 drives on new training-split seeds ($2 and $3, one
# process each, $4 episodes per task), the expert labels every state it visits, all
# episodes are kept (`vla-ros collect --policy`).
dagger() {
    local model=$1; shift 1
    for batch in "$1" "$2"; do
        OMP_NUM_THREADS=1 "$VLA" collect --task reach pick_up --episodes "$3" --seed "$batch" \
            --image-size 64 --policy openvla --model-path "$model" \
            --output "$WORK/dagger_$batch" --no-progress --json > "$WORK/dagger_$batch.json" &
    done
    wait
}

if [[ -z "${SKIP_TRAIN:-}" ]]; then
    # Stage 1, OpenVLA's simulation variant (vla_ros/policies/openvla_sim, which
    # `--policy openvla` builds from its presets and checkpoints) from scratch ('sim_base'
    # preset: DINOv2 + SigLIP with 8 px
    # patches on front + wrist at 64 px, fused projector, one keypoint token per camera,
    # OFT-style proprio token, 4-layer Llama with the 32k Llama-2 tokenizer, 256-bin action
    # tokens trained with HL-Gauss targets, object probe on the simulator's layout).
    train --policy openvla --size sim_base --data "$DATA" --output "$WORK/openvla_base" \
        --steps 8000 --lr 6e-4 --seed 0 --checkpoint-every 1000 > "$WORK/train_openvla.json"
    # Stage 2: the same model grown by an instruction-conditioned target token per camera
    # (and its training-only probe); new modules start fresh, the rest from stage 1. The
    # shipped lineage stopped this 6,000-step schedule at step 3,000.
    train --policy openvla --size sim_base --set target_readout=true \
        --set target_probe_weight=1.0 --init-weights "$WORK/openvla_base" --data "$DATA" \
        --output "$WORK/openvla_target" --steps 6000 --stop-after 3000 --lr 3e-4 \
        --warmup-steps 200 --seed 2 --checkpoint-every 500 > "$WORK/train_openvla_target.json"
    STAGE2="$WORK/openvla_target/checkpoints/step_00003000/policy"
    # Stage 3: DAgger round 1 (seeds 10000.., 20000.., 100 episodes per task each), then
    # training continues on demonstrations + DAgger data (same statistics key).
    dagger "$STAGE2" 10000 20000 100
    merge "$WORK/dagger1/sim_reach_pick_up" "$WORK/demos_0" "$WORK/demos_750" \
        "$WORK/dagger_10000" "$WORK/dagger_20000"
    train --policy openvla --model-path "$STAGE2" --data "$WORK/dagger1/sim_reach_pick_up" \
        --output "$WORK/openvla_dagger1" --steps 3000 --lr 3e-4 --warmup-steps 100 --seed 3 \
        --checkpoint-every 1000 > "$WORK/train_openvla_dagger1.json"
    # Stage 4: DAgger round 2 driven by stage 3 (seeds 30000.., 40000.., 150 per task
    # each); the model gains the state probe ('sim' preset) and trains on everything (the
    # shipped openvla_sim until stage 7; a third round driven by it alone did not help:
    # docs/results.md).
    dagger "$WORK/openvla_dagger1" 30000 40000 150
    merge "$WORK/dagger2/sim_reach_pick_up" "$WORK/demos_0" "$WORK/demos_750" \
        "$WORK/dagger_10000" "$WORK/dagger_20000" "$WORK/dagger_30000" "$WORK/dagger_40000"
    train --policy openvla --size sim --init-weights "$WORK/openvla_dagger1" \
        --data "$WORK/dagger2/sim_reach_pick_up" --output "$WORK/openvla_sim" \
        --steps 4000 --lr 3e-4 --warmup-steps 100 --seed 4 --checkpoint-every 1000 \
        > "$WORK/train_openvla_sim.json"
    # Stage 6: stage 4 grown by a pixel-resolution target token per camera ('sim_pixel'
    # preset: an instruction-conditioned spatial soft-argmax over a small full-resolution
    # conv stem; training-only probe and keypoint loss on the named object's projected
    # pixel in both cameras), on the demonstrations with counterfactual relabels for a
    # quarter of the frames, keeping stage 4's statistics (so its action bins keep their
    # meaning). The shipped lineage stopped this 4,000-step schedule at step 2,500.
    train --policy openvla --size sim_pixel --init-weights "$WORK/openvla_sim" \
        --keep-statistics --data "$DATA" --output "$WORK/openvla_pixel" --steps 4000 \
        --stop-after 2500 --lr 3e-4 --warmup-steps 100 --seed 12 --counterfactual 0.25 \
        --checkpoint-every 500 > "$WORK/train_openvla_pixel.json"
    STAGE6="$WORK/openvla_pixel/checkpoints/step_00002500/policy"
    # Stage 7: DAgger round driven by stage 6 (seeds 110000.., 120000.., 150 per task
    # each), then training continues on demonstrations + this round, every simulated frame
    # labelled anew by the current expert from its state (shipped until stop 14).
    dagger "$STAGE6" 110000 120000 150
    merge "$WORK/dagger3/sim_reach_pick_up" "$WORK/demos_0" "$WORK/demos_750" \
        "$WORK/dagger_110000" "$WORK/dagger_120000"
    train --policy openvla --model-path "$STAGE6" --keep-statistics --relabel-from-state \
        --data "$WORK/dagger3/sim_reach_pick_up" --output "$WORK/openvla_pixel_dagger" \
        --steps 3000 --lr 2e-4 --warmup-steps 100 --seed 13 --counterfactual 0.25 \
        --checkpoint-every 500 > "$WORK/train_openvla_pixel_dagger.json"
    # Stage 8: the expert now grasps a cube at the hand's own yaw (the open fingers clear
    # its diagonal), so a policy need not read the cube's yaw; stage 7 continues on the
    # same data, every approach frame relabelled from state by that expert.
    train --policy openvla --model-path "$WORK/openvla_pixel_dagger" --keep-statistics \
        --relabel-from-state --data "$WORK/dagger3/sim_reach_pick_up" \
        --output "$WORK/openvla_cube_yaw" --steps 1500 --lr 2e-4 --warmup-steps 100 \
        --seed 15 --counterfactual 0.25 --checkpoint-every 500 > "$WORK/train_openvla_cube_yaw.json"
    # Stage 9: DAgger round driven by stage 8 (seeds 130000.., 140000..), then training
    # continues on everything so far.
    dagger "$WORK/openvla_cube_yaw" 130000 140000 150
    merge "$WORK/dagger4/sim_reach_pick_up" "$WORK/demos_0" "$WORK/demos_750" \
        "$WORK/dagger_110000" "$WORK/dagger_120000" "$WORK/dagger_130000" "$WORK/dagger_140000"
    train --policy openvla --model-path "$WORK/openvla_cube_yaw" --keep-statistics \
        --relabel-from-state --data "$WORK/dagger4/sim_reach_pick_up" \
        --output "$WORK/openvla_dagger4" --steps 1500 --lr 2e-4 --warmup-steps 100 --seed 16 \
        --counterfactual 0.25 --checkpoint-every 500 > "$WORK/train_openvla_dagger4.json"
    # Stage 10: the same once more, with relabelling stopped at the first frame in which
    # the arm touches an object (stages 7-9 relabelled frames after a finger had pushed
    # the target away): the shipped openvla_sim. On a rerun, where the fix is in from
    # stage 7 on, this stage only continues training.
    train --policy openvla --model-path "$WORK/openvla_dagger4" --keep-statistics \
        --relabel-from-state --data "$WORK/dagger4/sim_reach_pick_up" \
        --output "$WORK/openvla_relabel_fixed" --steps 1500 --lr 2e-4 --warmup-steps 100 \
        --seed 17 --counterfactual 0.25 --checkpoint-every 500 \
        > "$WORK/train_openvla_relabel_fixed.json"
    # The Octo-style diffusion policy, on the demonstrations only. Run trainings one after
    # the other: two sharing 2 cores are slower than both in sequence.
    THREADS=1 train --policy octo --size sim --data "$DATA" --output "$WORK/octo_sim" \
        --steps 4000 --lr 6e-4 --seed 0 --checkpoint-every 1000 > "$WORK/train_octo.json"
fi

# Stage 12 (issue 20), NOT run yet: the shipped policy finishes its task. It holds what
# it lifted (stays at what it reached) until the horizon and says when it is done.
# Opt-in, on top of the shipped checkpoint (the stages above need not run again):
#
#   STAGE12=1 SKIP_COLLECT=1 SKIP_TRAIN=1 SKIP_EVAL=1 bash scripts/train_shipped_policies.sh
#
# Measured at reduced size on the loaded 2-core CPU (docs/results.md): 2 x 150
# demonstrations per task 7 min, DAgger 2 x 50 about 5 min, 1,200 steps 24 min, 100
# evaluation episodes per task about 5 min per gripper mode; the full size below should
# take about 1.5 h. Sizes can be reduced for a shorter run: HOLD_EPISODES (per batch and
# task, default 500), DAGGER_EPISODES (150), STAGE12_STEPS (3000), EVAL_MODES
# ("continuous binary"). The "before" numbers it is measured against are in docs/results.md.
if [[ -n "${STAGE12:-}" ]]; then
    SHIPPED=${SHIPPED:-vla_ros/models/openvla_sim}
    # a) Expert demonstrations that run on after success to the horizon (the collect
    #    default now): the expert lifts, then holds still with the fingers closed; every
    #    frame carries the done label. DART noise as in stage 1; only episodes still
    #    achieved at the horizon are kept. New seeds (never used for training before).
    for batch in 300000 300500; do
        OMP_NUM_THREADS=1 "$VLA" collect --task reach pick_up --episodes "${HOLD_EPISODES:-500}" \
            --seed "$batch" --image-size 64 --action-noise 0.3 --output "$WORK/hold_$batch" --no-progress \
            --json > "$WORK/hold_$batch.json" &
    done
    wait
    # b) A DAgger round driven by the shipped policy, also to the horizon: the expert
    #    labels what to do after the policy's lift (hold; re-grasp what it dropped).
    dagger "$SHIPPED" 310000 320000 "${DAGGER_EPISODES:-150}"
    # c) The shipped checkpoint grown by a terminate dimension (arm7 -> arm7_done; same
    #    weights, statistics extended by fixed [0, 1] bounds for the new dimension).
    rm -rf "$WORK/openvla_sim_done"
    "$(dirname "$VLA")/python" -m vla_ros.training.done_label "$SHIPPED" "$WORK/openvla_sim_done"
    # d) Training continues on the new data only (older episodes have no done label),
    #    the done label as the terminate dimension, the shipped statistics kept (the
    #    directory name keeps the statistics key sim_reach_pick_up).
    merge "$WORK/stage12/sim_reach_pick_up" "$WORK/hold_300000" "$WORK/hold_300500" \
        "$WORK/dagger_310000" "$WORK/dagger_320000"
    train --policy openvla --model-path "$WORK/openvla_sim_done" --keep-statistics \
        --done-label --done-hold-steps "${DONE_HOLD_STEPS:-10}" --relabel-from-state \
        --data "$WORK/stage12/sim_reach_pick_up" \
        --output "$WORK/openvla_hold_done" --steps "${STAGE12_STEPS:-3000}" --lr 2e-4 --warmup-steps 100 \
        --seed 20 --counterfactual 0.25 --checkpoint-every 500 \
        > "$WORK/train_openvla_hold_done.json"
    # e) The issue's acceptance measurement: 100 unseen train-template layouts per task,
    #    first success and success at the end of the horizon, with the gripper command
    #    passed through and in binary mode; compare with docs/results.md's "before" rows.
    for mode in ${EVAL_MODES:-continuous binary}; do
        "$VLA" eval --policy openvla --model-path "$WORK/openvla_hold_done" --episodes 100 \
            --seed 5000 --tasks reach pick_up --split train --gripper-mode "$mode" --json \
            --no-progress > "$WORK/eval_openvla_hold_done_$mode.json"
    done
fi

if [[ -z "${SKIP_EVAL:-}" ]]; then
    # Seeds 5000.. are never used for training (demonstrations 0..1499, DAgger 10000..).
    # At 50 episodes per task the evaluation seeds are 5000..5049.
    for model in openvla_relabel_fixed octo_sim; do
        family=${model%%_*}
        for split in train test; do
            "$VLA" eval --policy "$family" --model-path "$WORK/$model" --episodes 50 \
                --seed 5000 --tasks reach pick_up --split "$split" --json --no-progress \
                > "$WORK/eval_${model}_${split}.json"
        done
    done
fi
