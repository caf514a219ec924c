#!/usr/bin/env bash
# Continue this study's bench in the order its README fixes, until a deadline.
#
#   bash results/study-qwen05b-very-hard/continue.sh MINUTES    # e.g. 150: stop starting work after that
#
# Why this order: an sdpo run's trainer state (~140 MB) is not committed, so an sdpo run cut off by
# the end of a session restarts from its first step on the next machine. Sdpo runs therefore go one
# at a time and only when enough time is left for a whole one (SDPO_RUN_MINUTES, a full budget here);
# otherwise the time goes to multi-turn runs, which resume from their committed records. Finished
# runs are skipped by `ttsd bench` itself. Run from the repository root, after scripts/setup and the
# model preparation in the README.
set -euo pipefail
minutes=${1:?usage: continue.sh MINUTES}
SDPO_RUN_MINUTES=${SDPO_RUN_MINUTES:-75}
PROBLEMS=(humaneval-109 humaneval-91 humaneval-64 humaneval-108 humaneval-126)
BENCH=results/study-qwen05b-very-hard/bench
export VLLM_CPU_KVCACHE_SPACE=4 HF_HUB_OFFLINE=1
common=(--budget 128 --batch-size 8 --pool 512 --max-tokens 1024 --context-limit 4096
        --model qwen2.5-coder-0.5b-instruct --backend vllm --out "$BENCH")
deadline=$(( $(date +%s) + minutes * 60 ))
[[ -d problems/pool/humaneval ]] || .venv/bin/ttsd problems import humaneval --out problems/pool/humaneval
left() { echo $(( (deadline - $(date +%s)) / 60 )); }
finished() {  # finished METHOD PROBLEM SEED
  local summary="$BENCH/runs/$2/$1/seed-$3/summary.json"
  [[ -f $summary ]] && grep -q '"finished": *true' "$summary"
}

for problem in "${PROBLEMS[@]}"; do
  for seed in 0 1 2 3 4; do
    finished sdpo "$problem" "$seed" && continue
    if (( $(left) < SDPO_RUN_MINUTES )); then
      echo "continue.sh: $(left) min left, too few for sdpo seed $seed on $problem; multi-turn instead"
      break
    fi
    run_dir="$BENCH/runs/$problem/sdpo/seed-$seed"
    if [[ -s $run_dir/steps.jsonl && ! -d $run_dir/state ]]; then
      # Cut off by a session's end and checked out on a new machine: its trainer state is gone, and
      # ttsd refuses to resume it inexactly, so it starts over (its records so far are discarded).
      echo "continue.sh: $run_dir has steps but no trainer state; starting it over"
      rm -rf "$run_dir"
    fi
    echo "continue.sh: sdpo seed $seed on $problem ($(left) min left)"
    .venv/bin/ttsd bench --split "$problem" --methods sdpo --seeds 1 --seed-start "$seed" --concurrent 1 "${common[@]}"
  done
  all_multi_turn=true
  for seed in 0 1 2 3 4; do finished multi-turn "$problem" "$seed" || all_multi_turn=false; done
  if ! $all_multi_turn; then
    (( $(left) > 0 )) || exit 0
    echo "continue.sh: multi-turn seeds 0-4 on $problem ($(left) min left; stop it at the deadline, it resumes)"
    timeout $(( $(left) * 60 )) .venv/bin/ttsd bench --split "$problem" --methods multi-turn --seeds 5 --concurrent 5 "${common[@]}" || true
  fi
  for seed in 0 1 2 3 4; do
    { finished sdpo "$problem" "$seed" && finished multi-turn "$problem" "$seed"; } || exit 0
  done
done
