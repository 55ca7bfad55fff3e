from detector.local.progress import TrainingProgress


class Bar:
    def __init__(self):
        self.n = 0

    def update(self, k):
        self.n += k


def test_metric_lines_are_collected_and_iterations_advance_the_bar():
    progress = TrainingProgress(enabled=False)
    progress.feed(["[11/26 13:48:14 de.train]: Resuming from /x/checkpoint_00000100.pth at iteration 100 of 600\n"])
    assert progress.start_iteration == 100
    progress.bar = Bar()
    progress.bar.n = 100
    progress.feed([" eta: 0:00:04  iter: 119  total_loss: 1.9\n", "training_ap 0.712000\n", "testing_ap 0.650000\n",
                   "testing_ap50 0.950000\n", "iter: 139\n"])
    assert progress.bar.n == 140
    assert progress.metrics == {"training_ap": 0.712, "testing_ap": 0.65, "testing_ap50": 0.95}
