#!/usr/bin/env bash
# Reproduce the policies shipped in vla_ros/models/: expert demonstrations with DART noise
# -> training (fixed seeds) -> closed-loop evaluation; optionally one DAgger round.
#
#   bash scripts/train_shipped_policies.sh [WORK_DIR]      (default: build/shipped)
#
# Steps can be skipped with SKIP_COLLECT=1 / SKIP_TRAIN=1 / SKIP_EVAL=1; DAGGER=1 adds the
# DAgger round (built and tested, but not used for the shipped checkpoints). Step counts
# can be overridden (OPENVLA_STEPS, OCTO_STEPS, DAGGER_STEPS); the defaults are the shipped
# runs. Wall times on the 2-core CPU this was made on are in docs/results.md (about 5 min
# of collection, 45 min for OpenVLA, 9 min for Octo).
# The shipped checkpoints are $WORK/openvla_sim and $WORK/octo_sim.
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${1:-build/shipped}
VLA=${VLA:-.venv/bin/vla-ros}
OPENVLA_STEPS=${OPENVLA_STEPS:-8000}
OCTO_STEPS=${OCTO_STEPS:-4000}
DAGGER_EPISODES=${DAGGER_EPISODES:-300}
DAGGER_STEPS=${DAGGER_STEPS:-6000}
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

if [[ -z "${SKIP_TRAIN:-}" ]]; then
    # OpenVLA family from scratch ('sim' preset: DINOv2 + SigLIP with 8 px patches on front
    # + wrist at 64 px, fused projector, one keypoint token per camera, OFT-style proprio
    # token, 4-layer Llama with the 32k Llama-2 tokenizer, 256-bin action tokens trained
    # with HL-Gauss targets, object probe on the simulator's layout), then the Octo-style
    # diffusion policy. Run one after the other: two trainings sharing 2 cores are slower
    # than both in sequence.
    OMP_NUM_THREADS=2 "$VLA" train --policy openvla --size sim --full --data "$DATA" \
        --output "$WORK/openvla_sim" --steps "$OPENVLA_STEPS" --batch-size 32 --lr 6e-4 \
        --weight-decay 0.01 --seed 0 --checkpoint-every 1000 --no-progress \
        > "$WORK/train_openvla.json"
    OMP_NUM_THREADS=1 "$VLA" train --policy octo --size sim --full --data "$DATA" \
        --output "$WORK/octo_sim" --steps "$OCTO_STEPS" --batch-size 32 --lr 6e-4 \
        --weight-decay 0.01 --seed 0 --checkpoint-every 1000 --no-progress \
        > "$WORK/train_octo.json"
fi

if [[ -n "${DAGGER:-}" ]]; then
    # DAgger: the trained OpenVLA policy drives on new training-split seeds (10000..), the
    # expert labels every state it visits; all episodes are kept. Then training continues
    # from the stage-1 weights on demonstrations + DAgger data (a new warmup + cosine).
    for batch in 10000 20000; do
        OMP_NUM_THREADS=1 "$VLA" collect --task reach pick_up --episodes "$DAGGER_EPISODES" \
            --seed "$batch" --image-size 64 --policy openvla --model-path "$WORK/openvla_sim" \
            --output "$WORK/dagger_$batch" --no-progress --json > "$WORK/dagger_$batch.json" &
    done
    wait
    # The same statistics key as stage 1, so the checkpoint keeps one unnorm_key.
    DAGGER_DATA="$WORK/dagger/sim_reach_pick_up"
    merge "$DAGGER_DATA" "$WORK/demos_0" "$WORK/demos_750" "$WORK/dagger_10000" \
        "$WORK/dagger_20000"
    OMP_NUM_THREADS=2 "$VLA" train --policy openvla --model-path "$WORK/openvla_sim" --full \
        --data "$DAGGER_DATA" --output "$WORK/openvla_sim_dagger" --steps "$DAGGER_STEPS" \
        --batch-size 32 --lr 3e-4 --weight-decay 0.01 --seed 1 --checkpoint-every 2000 \
        --no-progress > "$WORK/train_openvla_dagger.json"
fi

if [[ -z "${SKIP_EVAL:-}" ]]; then
    # Seeds 5000.. are never used for training (demonstrations 0..1499, DAgger 10000..).
    for model in openvla_sim octo_sim; do
        family=${model%%_*}
        for split in train test; do
            "$VLA" eval --policy "$family" --model-path "$WORK/$model" --episodes 50 \
                --seed 5000 --tasks reach pick_up --split "$split" --json --no-progress \
                > "$WORK/eval_${model}_${split}.json"
        done
    done
fi
