"""mae-train that sends itself SIGNAL right after logging step STEP: a crash (SIGKILL) or a preemption notice
(SIGTERM) at a known point. Run by the tests: python tests/train/signal_at.py SIGNAL STEP <mae-train flags>"""

import os
import signal
import sys

from mae_flax.train import main, report

signum, step_to_signal = signal.Signals[sys.argv.pop(1)], int(sys.argv.pop(1))
write = report.MetricsWriter.write


def write_then_signal(self, step, metrics):
    write(self, step, metrics)
    if step == step_to_signal:
        os.kill(os.getpid(), signum)


report.MetricsWriter.write = write_then_signal
main.run()
