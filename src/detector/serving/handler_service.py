"""The multi-model-server entry point: the inference toolkit's handler service with our error handling.

multi-model-server calls ``handle(None, context)`` once when a worker loads the model (an error
there fails the load instead of leaving a worker that answers 500 to everything) and
``handle(requests, context)`` for each batch of requests. Every request gets a JSON answer: the
result, or ``{"error": "..."}`` with 400/406/413/415 for problems the client can fix and 500 for
anything else, whose traceback goes to the log and never into the response.

The toolkit's user-module hook (``SAGEMAKER_PROGRAM``, ``model/code/inference.py``) is disabled:
a model directory is data, not code.
"""

from __future__ import annotations

import logging
from http import HTTPStatus

from sagemaker_inference.default_handler_service import DefaultHandlerService
from sagemaker_inference.default_inference_handler import DefaultInferenceHandler
from sagemaker_inference.transformer import Transformer

from ..environment import ServingEnvironment
from ..failure import failure_reason
from .encoding import encode_error
from .inference_handler import InferenceHandler, request_header
from .request_errors import RequestError
from .worker_status import mark_failed, mark_ready

logger = logging.getLogger("detector.serving")

JSON_TYPE = "application/json"
INTERNAL_ERROR = "internal error while handling the request; the server log has the details"


class ToolkitInferenceHandler(DefaultInferenceHandler):
    """The toolkit's default-handler interface, answered by ``InferenceHandler``."""

    def __init__(self, handler: InferenceHandler):
        self.handler = handler

    def default_model_fn(self, model_dir, context=None):
        return self.handler.model_fn(model_dir, context)

    def default_input_fn(self, input_data, content_type, context=None):
        return self.handler.input_fn(input_data, content_type, context)

    def default_predict_fn(self, data, model, context=None):
        return self.handler.predict_fn(data, model, context)

    def default_output_fn(self, prediction, accept, context=None):
        return self.handler.output_fn(prediction, accept, context)


class DetectorTransformer(Transformer):
    def __init__(self, handler: InferenceHandler):
        super().__init__(default_inference_handler=ToolkitInferenceHandler(handler))
        self.handler = handler

    def _validate_user_module_and_set_functions(self):
        functions = self._default_inference_handler
        self._model_fn = functions.default_model_fn
        self._input_fn = functions.default_input_fn
        self._predict_fn = functions.default_predict_fn
        self._output_fn = functions.default_output_fn
        self._transform_fn = self._default_transform_fn

    def transform(self, data, context):
        self.validate_and_initialize(model_dir=context.system_properties.get("model_dir"), context=context)
        return [self._transform_one(index, item, context) for index, item in enumerate(data)]

    def _transform_one(self, index: int, item: dict, context) -> bytes:
        try:
            content_type = request_header(context, "Content-Type", index)
            response_type = self.handler.response_type(request_header(context, "Accept", index))
            body, response_type = self._transform_fn(self._model, item.get("body"), content_type, response_type)
            context.set_response_content_type(index, response_type)
            return body
        except RequestError as error:
            logger.info("request rejected with %d: %s", error.status, error.message)
            return self._error(context, index, error.status, error.message)
        except Exception:
            logger.exception("request failed")
            return self._error(context, index, 500, INTERNAL_ERROR)

    @staticmethod
    def _error(context, index: int, status: int, message: str) -> bytes:
        context.set_response_status(code=status, phrase=HTTPStatus(status).phrase, idx=index)
        context.set_response_content_type(index, JSON_TYPE)
        return encode_error(message)


class HandlerService(DefaultHandlerService):
    def __init__(self, settings: ServingEnvironment | None = None):
        self.settings = settings or ServingEnvironment.from_env()
        super().__init__(transformer=DetectorTransformer(InferenceHandler(self.settings)))

    def initialize(self, context):
        # Unlike the toolkit's, puts nothing from the model directory on the Python path, and
        # reports the outcome to `detector serve`.
        try:
            self._service.validate_and_initialize(model_dir=context.system_properties.get("model_dir"), context=context)
        except Exception as error:
            logger.exception("the model failed to load")
            mark_failed(self.settings.runtime_dir, failure_reason(error))
            raise
        mark_ready(self.settings.runtime_dir)


_service: HandlerService | None = None


def handle(data, context):
    """multi-model-server's entry point (``detector.serving.handler_service:handle``)."""
    global _service
    if _service is None:
        _service = HandlerService()
    if data is None:
        _service.initialize(context)
        return None
    return _service.handle(data, context)
