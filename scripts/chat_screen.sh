#!/usr/bin/env bash
# bash scripts/chat_screen.sh [OUT]   (default OUT: runs/chat-screen; LOG.md 2026-12-07 has its numbers)
# Screening, seed 0, fp32 (this AVX2 CPU runs bf16 ~5x slower than fp32): the paper recipe on the demo's
# data, one phase 1 (key text is raw under every rendering, no levers: identical), then phase 2 and its
# evaluation raw, chat with statements continued by the assistant, chat with statements as a user turn.
set -euo pipefail
OUT=${1:-runs/chat-screen}
cd "$(dirname "$0")/.."
ROTE=.venv/bin/rote
COMMON=(--set out_dir=$OUT --set phase1.precision=fp32 --set phase2.precision=fp32 --set eval.precision=fp32
        --set "eval.stages=[phase2]" --set "eval.prompt_sets=[key,train,test,unrelated]" --set eval.multiple_choice=false)
PAPER=(--set phase1.lr=5e-4 --set phase1.epochs=25 --set phase1.batch_size=16 --set "phase1.update.modules=[]"
       --set phase1.update.embeddings=all --set phase1.preserve.replay=0 --set phase1.preserve.known_facts=0
       --set phase2.n_prompts=1 --set phase2.preserve.contrast=0 --set phase2.preserve.replay=0 --set phase2.preserve.known_facts=0)
$ROTE run configs/demo.yaml "${COMMON[@]}" "${PAPER[@]}" --set name=p1 --set model.chat_template=off --stop-after phase1
CK=$OUT/p1/phase1/checkpoint
for v in "raw model.chat_template=off" "chat_assistant model.chat_template=on" "chat_user model.chat_template=on model.chat_statements=user"; do
  set -- $v; name=$1; shift
  sets=(); for s in "$@"; do sets+=(--set "$s"); done
  $ROTE run configs/demo.yaml "${COMMON[@]}" "${PAPER[@]}" --set name=$name --set phase2.checkpoint=$CK "${sets[@]}"
done
