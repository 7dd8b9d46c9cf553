#!/usr/bin/env bash
# The main job on a fresh machine: set up the venv, generate ESC-10 from the real clips, and train
# EnvNet-v2 with InterMix (hidden points 1-4, sound mixing ratio, strong augmentation) on split 1
# with a short CPU schedule, then print the 10-crop test error. Extra arguments go to main.py.
#   ESC50_DIR  ESC-50 layout to read (default ../shared/data/ESC-50-esc10, the 400 ESC-10 clips)
#   DATA       where esc_gen.py writes the npz files (default data/)
#   EPOCHS     epochs (default 2, 10 SGD steps: about 3 minutes on 2 CPU cores, a smoke test of
#              the whole pipeline; expect near-chance error. The paper trains 1200 epochs)
#   SAVE       output folder (default results/demo-<date-time>)
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
ESC50_DIR=${ESC50_DIR:-../shared/data/ESC-50-esc10}
DATA=${DATA:-data}
EPOCHS=${EPOCHS:-2}
SAVE=${SAVE:-results/demo-$(date +%Y%m%d-%H%M%S)}
if [ ! -f "$DATA/esc10/wav44.npz" ]; then
  .venv/bin/python esc_gen.py "$DATA" --source "$ESC50_DIR"
fi
exec .venv/bin/python main.py --data "$DATA" --dataset esc10 --netType envnetv2 \
  --learning intermix --eligible 1 2 3 4 --mixup_type sound --strongAugment --split 1 \
  --nEpochs "$EPOCHS" --schedule 0.7 --testEvery "$EPOCHS" --save "$SAVE" "$@"
