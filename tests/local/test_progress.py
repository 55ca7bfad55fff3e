from detector.local.progress import TrainingProgress


class Bar:
    def __init__(self):
        self.n = 0

    def update(self, k):
        self.n += k


def test_metric_lines_are_collected_and_iterations_advance_the_bar():
    progress = TrainingProgress(mode="none")
    progress.feed(["[11/26 13:48:14 de.train]: Resuming from /x/checkpoint_00000100.pth at iteration 100 of 600\n"])
    assert progress.start_iteration == 100
    progress.bar = Bar()
    progress.bar.n = 100
    progress.feed([" eta: 0:00:04  iter: 119  total_loss: 1.9\n", "training_ap 0.712000\n", "testing_ap 0.650000\n",
                   "testing_ap50 0.950000\n", "iter: 139\n"])
    assert progress.bar.n == 140
    assert progress.metrics == {"training_ap": 0.712, "testing_ap": 0.65, "testing_ap50": 0.95}


def test_plain_lines_every_interval_with_loss_speed_and_time_left():
    import io

    now = [0.0]
    out = io.StringIO()
    progress = TrainingProgress(out, mode="lines", interval_s=30, clock=lambda: now[0])
    progress.line("[de.train]: Starting training at iteration 0 of 600\n")
    for iteration in range(0, 300, 10):
        now[0] = iteration * 0.5  # 2 iterations a second
        progress.line(f" eta: 0:04:00  iter: {iteration + 9}  total_loss: {1.5 - iteration / 1000:.3f}  time: 0.5\n")
    now[0] = 150.0
    progress.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "  training: 600 iterations; a progress line every 30 s"
    assert lines[1] == "  training: iteration 70 of 600 (12%), total_loss 1.440, 2.33 it/s, about 3 min 47 s left"
    assert len(lines) == 1 + 4 + 1  # the first, one each 30 s of the 145 s, and the last
    assert lines[-1] == "  training: stopped at iteration 300 of 600 after 2 min 30 s"


def test_no_output_without_progress():
    import io

    out = io.StringIO()
    progress = TrainingProgress(out, mode="none", interval_s=0)
    progress.feed(["Starting training at iteration 0 of 10\n", "iter: 4  total_loss: 1.0\n", "testing_ap 0.5\n"])
    progress.close()
    assert out.getvalue() == "" and progress.metrics == {"testing_ap": 0.5}
