"""`larft train` with a pause after every step, so a test can signal or kill it mid-run."""

import sys
import time

from transformers import TrainerCallback

import larft.cli
import larft.train


class Pause(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        time.sleep(1.0)


_train = larft.train.train
larft.train.train = lambda train_args, config: _train(train_args, config, extra_callbacks=[Pause()])
sys.exit(larft.cli.main(["train", *sys.argv[1:]]))
