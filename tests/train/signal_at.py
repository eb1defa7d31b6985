"""mae-train that sends itself SIGNAL right after logging step STEP: a crash (SIGKILL), a preemption notice
(SIGTERM), Ctrl-C (SIGINT) or Ctrl-C twice (SIGINT2) at a known point. Run by the tests:
python tests/train/signal_at.py SIGNAL STEP <mae-train flags>"""

import os
import signal
import sys

from mae_flax.train import main, report

name, step_to_signal = sys.argv.pop(1), int(sys.argv.pop(1))
signum, times = signal.Signals[name.rstrip('2')], 2 if name.endswith('2') else 1
write = report.MetricsWriter.write


def write_then_signal(self, step, metrics):
    write(self, step, metrics)
    if step == step_to_signal:
        for _ in range(times):
            os.kill(os.getpid(), signum)


report.MetricsWriter.write = write_then_signal
main.run()
