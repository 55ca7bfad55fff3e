"""Errors a request can cause: each becomes an HTTP status and a JSON body ``{"error": message}``."""

from __future__ import annotations


class RequestError(Exception):
    """A problem with one request that the client can fix; never a server fault."""

    status = 400

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class BadRequest(RequestError):
    status = 400


class PayloadTooLarge(RequestError):
    status = 413


class UnsupportedContentType(RequestError):
    status = 415


class NotAcceptable(RequestError):
    status = 406
