"""Pre-training under torchrun with DDP (gloo on CPU): two processes, each with half of every batch,
end where one process with the whole batch ends."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = """
import json, os, sys
from transformers import TrainerCallback
from kgllm.llm import TrainingConfig
from kgllm.llm.tuning import RunConfig, pretrain

class Losses(TrainerCallback):
    def __init__(self):
        self.losses = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if "loss" in (logs or {}):
            self.losses.append(logs["loss"])

texts = [line for line in open(sys.argv[2]).read().splitlines() if line]
tiny = TrainingConfig(hidden_size=32, num_layers=1, num_heads=2, vocab_size=300, max_seq_len=64, threads=1)
run = RunConfig(max_steps=8, batch_size=8, logging_steps=1, learning_rate=3e-3, warmup_steps=2, length_buckets=True)
losses = Losses()
result = pretrain(texts[:-5], sys.argv[1], model_config=tiny, run=run, held_out=texts[-5:], progress=False,
                  resume=False, callbacks=[losses])
if int(os.environ.get("RANK", "0")) == 0:
    print("RESULT " + json.dumps({"losses": losses.losses, "world": int(os.environ.get("WORLD_SIZE", "1")),
                                   "perplexity": result.metrics["held_out_perplexity"]}))
"""


def pretrain(launcher: list[str], tmp_path: Path, name: str) -> dict:
    script, texts = tmp_path / "pretrain.py", tmp_path / "texts.txt"
    script.write_text(SCRIPT)
    countries = ["kenya", "uganda", "ghana", "mali", "niger", "chad", "peru", "chile", "nepal", "laos"]
    # 45 texts, 40 trained on: five whole batches of 8 (DDP pads a short last batch with repeated examples)
    texts.write_text("".join(f"{a} is a neighbour of {b}.\n" for a in countries for b in countries if a < b))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [*launcher, str(script), str(tmp_path / name), str(texts)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    [line] = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line.removeprefix("RESULT "))


def test_torchrun_with_two_processes_matches_one_process(tmp_path):
    single = pretrain([sys.executable], tmp_path, "single")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    parallel = pretrain(torchrun, tmp_path, "ddp")
    assert (single["world"], parallel["world"]) == (1, 2)
    assert len(single["losses"]) == len(parallel["losses"]) == 8
    assert parallel["losses"] == pytest.approx(single["losses"], rel=1e-3)  # step by step
    assert single["losses"][-1] < single["losses"][0] - 0.1  # and they did learn
    assert parallel["perplexity"] == pytest.approx(single["perplexity"], rel=1e-3)
    assert (tmp_path / "ddp" / "model.safetensors").is_file()
