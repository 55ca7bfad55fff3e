"""The hosting container: request decoding, the inference handler and multi-model-server.

Everything except ``handler_service`` and ``model_server`` is independent of the server and can be
used (and tested) in-process; ``detector predict`` runs the same handler on local files.
"""
