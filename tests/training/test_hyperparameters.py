import pytest

from detector.errors import HyperparameterError
from detector.training.hyperparameters import DEFAULT_MODEL, Hyperparameters


def test_defaults():
    params = Hyperparameters.from_strings({})
    assert params.model == DEFAULT_MODEL
    assert params.max_iter is None and params.precision == "auto" and params.amp is None and params.opts == ()


def test_string_values_are_typed():
    params = Hyperparameters.from_strings(
        {
            "max_iter": "100",
            "num_epochs": "2.5",
            "learning_rate": "0.01",
            "batch_size": "8",
            "amp": "False",
            "reset_checkpoints": "true",
            "opts": "MODEL.RPN.NMS_THRESH 0.6 INPUT.MIN_SIZE_TEST '800'",
            "checkpoint_minutes": "0.5",
        }
    )
    assert params.max_iter == 100 and params.num_epochs == 2.5 and params.learning_rate == 0.01
    assert params.batch_size == 8 and params.precision == "fp32" and params.reset_checkpoints is True
    assert params.opts == ("MODEL.RPN.NMS_THRESH", "0.6", "INPUT.MIN_SIZE_TEST", "800")
    assert params.checkpoint_minutes == 0.5


def test_sagemaker_names_are_ignored():
    params = Hyperparameters.from_strings({"sagemaker_program": "x", "sagemaker_region": '"us-east-1"'})
    assert params == Hyperparameters()


@pytest.mark.parametrize(
    "raw, fragment",
    [
        ({"max_iters": "10"}, "'max_iters' is not known"),
        ({"max_iter": "ten"}, "'max_iter'='ten': expected a whole number"),
        ({"max_iter": "1.5"}, "expected a whole number"),
        ({"learning_rate": "fast"}, "'learning_rate'='fast': expected a number"),
        ({"learning_rate": "nan"}, "expected a number"),
        ({"amp": "maybe"}, "'amp'='maybe': expected true or false"),
        ({"precision": "half"}, "'precision'='half': expected one of auto, fp32, bf16, fp16"),
        ({"precision": "bf16", "amp": "true"}, "'amp' and 'precision' are both set; 'amp' is the old name of 'precision'"),
        ({"batch_size": "0"}, "'batch_size' must be greater than 0"),
        ({"opts": "MODEL.RPN.NMS_THRESH"}, "KEY VALUE pairs"),
        ({"opts": "lr 0.1"}, "not a detectron2 config key"),
        ({"model": ""}, "'model'='': expected a non-empty string"),
    ],
)
def test_bad_values_name_the_hyperparameter(raw, fragment):
    with pytest.raises(HyperparameterError, match=fragment.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        Hyperparameters.from_strings(raw)


@pytest.mark.parametrize(
    "max_iter, num_epochs, expected",
    [(None, None, 90000), (500, None, 500), (None, 2, 25), (500, 2, 25), (10, 2, 10)],
)
def test_run_length_is_the_smaller_of_iterations_and_epochs(max_iter, num_epochs, expected):
    params = Hyperparameters(max_iter=max_iter, num_epochs=num_epochs)
    assert params.run_length(dataset_size=100, batch_size=8, config_max_iter=90000) == expected
