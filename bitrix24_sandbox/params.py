"""Request parameter parsing with PHP semantics.

Bitrix24 is PHP: ``fields[PHONE][0][VALUE]=x&values[]=a`` arrive as nested arrays, JSON bodies
are decoded as-is, GET bodies are ignored. Clients built against the sandbox must encode
parameters the way a real portal decodes them, so this mirrors PHP's ``parse_str`` closely.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"^([^\[]+)((?:\[[^\]]*\])*)")
_BRACKET = re.compile(r"\[([^\]]*)\]")


@dataclass
class UploadedFile:
    field: str
    filename: str
    content: bytes
    content_type: str


def _split_key(key: str) -> list[str] | None:
    m = _KEY.match(key)
    if not m:
        return None  # PHP drops keys with an empty base name ("[a]=1")
    return [m.group(1), *_BRACKET.findall(m.group(2))]


def _next_index(node: dict[str, Any]) -> int:
    ints = [int(k) for k in node if re.fullmatch(r"-?(?:0|[1-9]\d*)", k)]
    return max(ints) + 1 if ints else 0


def _assign(root: dict[str, Any], parts: list[str], value: Any) -> None:
    node = root
    for i, part in enumerate(parts):
        key = str(_next_index(node)) if part == "" else part
        if i == len(parts) - 1:
            node[key] = value
            return
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child


def _finalize(node: Any) -> Any:
    """Turn PHP arrays with keys 0..n-1 (in order) into lists; keep the rest as dicts."""
    if not isinstance(node, dict):
        return node
    items = {k: _finalize(v) for k, v in node.items()}
    keys = list(items)
    if keys and all(k == str(i) for i, k in enumerate(keys)):
        return list(items.values())
    return items


def build_nested(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = _split_key(key)
        if parts:
            _assign(root, parts, value)
    result = _finalize(root)
    return result if isinstance(result, dict) else {}


def parse_php_query(query: str) -> dict[str, Any]:
    return build_nested(parse_qsl(query, keep_blank_values=True))


def parse_multipart(body: bytes, content_type: str) -> tuple[dict[str, Any], list[UploadedFile]]:
    header = Message()
    header["content-type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not boundary:
        return {}, []
    pairs: list[tuple[str, Any]] = []
    files: list[UploadedFile] = []
    for raw_chunk in body.split(b"--" + boundary.encode("latin-1"))[1:]:
        if raw_chunk.startswith(b"--"):
            break
        chunk = raw_chunk[2:] if raw_chunk.startswith(b"\r\n") else raw_chunk.lstrip(b"\n")
        raw_headers, _, content = chunk.partition(b"\r\n\r\n")
        if content.endswith(b"\r\n"):
            content = content[:-2]
        part = Message()
        for line in raw_headers.decode("utf-8", "replace").split("\r\n"):
            name, sep, val = line.partition(":")
            if sep:
                part[name.strip()] = val.strip()
        field = part.get_param("name", header="content-disposition")
        if not isinstance(field, str):
            continue
        filename = part.get_param("filename", header="content-disposition")
        if isinstance(filename, str):
            ctype = part.get("content-type", "application/octet-stream")
            files.append(UploadedFile(field, filename, content, str(ctype)))
            # PHP keeps files out of $_POST; the placeholder keeps the request log readable.
            pairs.append((field, {"filename": filename, "size": len(content)}))
        else:
            pairs.append((field, content.decode("utf-8", "replace")))
    return build_nested(pairs), files


@dataclass
class ParsedRequest:
    params: dict[str, Any]
    files: list[UploadedFile]
    body_error: str | None = None


def parse_request(http_method: str, query: str, content_type: str, body: bytes) -> ParsedRequest:
    params = parse_php_query(query)
    files: list[UploadedFile] = []
    error: str | None = None
    if http_method == "GET" or not body:
        # A JSON body sent with GET is ignored by the portal (REFERENCE 1.1 / pitfall 9).
        return ParsedRequest(params, files)
    ctype = content_type.split(";", maxsplit=1)[0].strip().lower()
    body_params: dict[str, Any] = {}
    if ctype == "application/json":
        try:
            decoded = json.loads(body.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            error = f"invalid JSON body: {exc}"
        else:
            if isinstance(decoded, dict):
                body_params = decoded
            else:
                error = "JSON body is not an object"
    elif ctype == "multipart/form-data":
        body_params, files = parse_multipart(body, content_type)
    else:
        body_params = parse_php_query(body.decode("utf-8", "replace"))
    # PHP's $_REQUEST: POST wins over GET for the same key.
    params.update(body_params)
    return ParsedRequest(params, files, error)
