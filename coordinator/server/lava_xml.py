"""XML-RPC on the wire for the LAVA front: a request parsed safely, an answer or a fault marshalled.

The standard library's ``xmlrpc.client`` does the (un)marshalling; its expat parser is built here rather
than through ``xmlrpc.client.loads`` so that, as defusedxml does, a document type declaration (and with
it every entity definition, internal or external: the "billion laughs" and external-entity attacks) is
refused before anything is expanded.  XML-RPC never needs one.  The request's size is capped by the
route (:data:`MAX_REQUEST`) before it gets here.
"""
from __future__ import annotations

import xmlrpc.client
from typing import Any
from xml.parsers import expat

#: the largest request body taken (a LAVA job definition is a few KiB; big ones tens)
MAX_REQUEST = 4 * 1024 * 1024

# fault codes: LAVA's HTTP-like ones, and the XML-RPC interoperability codes for malformed calls
FAULT_BAD_REQUEST = 400
FAULT_UNAUTHORIZED = 401
FAULT_FORBIDDEN = 403
FAULT_NOT_FOUND = 404
FAULT_UNAVAILABLE = 503
FAULT_PARSE = -32700
FAULT_NO_METHOD = -32601
FAULT_PARAMS = -32602
FAULT_INTERNAL = -32603


class BadRequest(ValueError):
    """The body is not an XML-RPC call we take (the message says why; it becomes a -32700 fault)."""


def _refuse_doctype(*_: Any) -> Any:
    raise BadRequest("document type declarations (and entities) are not allowed")


def parse_call(body: bytes) -> tuple[str, tuple[Any, ...]]:
    """``(method name, params)`` of an XML-RPC ``methodCall``; ``BadRequest`` for anything else."""
    if len(body) > MAX_REQUEST:
        raise BadRequest(f"request larger than {MAX_REQUEST} bytes")
    target = xmlrpc.client.Unmarshaller()
    parser = expat.ParserCreate(None, None)
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_doctype
    parser.ExternalEntityRefHandler = _refuse_doctype
    parser.StartElementHandler = target.start
    parser.EndElementHandler = target.end
    parser.CharacterDataHandler = target.data
    target.xml(None, None)  # type: ignore[arg-type]  # as ExpatParser: expat hands over str, not bytes
    try:
        parser.Parse(body, True)
        params = target.close()
    except BadRequest:
        raise
    except (expat.ExpatError, xmlrpc.client.Error, ValueError, TypeError, KeyError, IndexError) as exc:
        raise BadRequest(f"not an XML-RPC call: {exc}") from None
    method = target.getmethodname()
    if not method:
        raise BadRequest("not an XML-RPC call: no methodName")
    return method, tuple(params)


def answer(value: Any) -> bytes:
    """The ``methodResponse`` carrying ``value`` (None allowed: lavacli enables the nil extension)."""
    return xmlrpc.client.dumps((value,), methodresponse=True, allow_none=True, encoding="utf-8").encode()


def fault(code: int, message: str) -> bytes:
    """The ``methodResponse`` carrying a fault (LAVA answers faults with HTTP 200, as XML-RPC says)."""
    return xmlrpc.client.dumps(xmlrpc.client.Fault(code, message), methodresponse=True,
                               encoding="utf-8").encode()
