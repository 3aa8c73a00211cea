"""The unary calls over REST (httpx), answers parsed into :mod:`perceiver_serve.answers` models."""

from __future__ import annotations

import io
import ssl
from typing import Any

import httpx
import numpy as np

from ..answers import ClassificationResponse, FillMaskResponse, Health, ModelList
from .connection import Connection, with_retries
from .errors import PerceiverError, unsendable


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:  # an HTTP date: not something this server sends
        return None


def rest_error(response: httpx.Response) -> PerceiverError:
    try:
        body = response.json()["error"]
        code, message = str(body["code"]), str(body["message"])
    except (ValueError, KeyError, TypeError):
        code, message = f"http_{response.status_code}", response.text[:200] or response.reason_phrase
    return PerceiverError(code, message, status=str(response.status_code),
                          request_id=response.headers.get("x-request-id"), retry_after=_retry_after(response))


class RestTransport:
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        verify: ssl.SSLContext | bool = True
        if (ca := connection.read_ca()) is not None:
            verify = ssl.create_default_context(cadata=ca.decode("ascii"))
        headers = {"authorization": f"Bearer {connection.api_key}"} if connection.api_key else {}
        self.http = httpx.AsyncClient(base_url=connection.url, headers=headers, verify=verify)

    async def aclose(self) -> None:
        await self.http.aclose()

    async def request(self, method: str, path: str, *, accept: tuple[int, ...] = (), **kwargs: Any) -> httpx.Response:
        """One call, retried on a full queue; statuses in ``accept`` are answers, not errors."""
        async def once(timeout: float | None) -> httpx.Response:
            try:
                response = await self.http.request(method, path, timeout=timeout, **kwargs)
            except httpx.TimeoutException:
                raise PerceiverError("deadline_exceeded", f"no answer from {self.connection.url} within "
                                     f"{self.connection.timeout} s") from None
            except (TypeError, ValueError) as exc:  # what can't be encoded (a lone surrogate, a number for a text)
                raise unsendable(exc) from None
            except httpx.TransportError as exc:
                raise PerceiverError("unreachable", f"cannot reach {self.connection.url}: {exc}") from None
            if response.status_code >= 400 and response.status_code not in accept:
                raise rest_error(response)
            return response

        return await with_retries(once, self.connection.timeout, self.connection.retries)

    async def classify_text(self, texts: list[str], top_k: int | None, model: str | None,
                            return_logits: bool) -> ClassificationResponse:
        body = _fields(texts=texts, top_k=top_k, model=model, return_logits=return_logits or None)
        response = await self.request("POST", "/classify/text", json=body)
        return ClassificationResponse.model_validate_json(response.content)

    async def fill_mask(self, text: str, mask_spans: list[tuple[int, int]] | None, top_k: int | None,
                        model: str | None, truncate: bool) -> FillMaskResponse:
        body = _fields(text=text, mask_spans=mask_spans, top_k=top_k, model=model, truncate=truncate or None)
        response = await self.request("POST", "/fill-mask", json=body)
        return FillMaskResponse.model_validate_json(response.content)

    async def classify_image(self, image: bytes, top_k: int | None, model: str | None,
                             return_logits: bool) -> ClassificationResponse:
        form = _form(top_k=top_k, model=model, return_logits=return_logits or None)
        response = await self.request("POST", "/classify/image", files={"image": ("image", image)}, data=form)
        return ClassificationResponse.model_validate_json(response.content)

    async def flow_file(self, frame1: bytes, frame2: bytes, fmt: str, model: str | None) -> bytes:
        """The flow field encoded by the server: ``npy``, ``flo``, ``png`` or ``json``."""
        files = {"frame1": ("frame1", frame1), "frame2": ("frame2", frame2)}
        response = await self.request("POST", "/flow", files=files, data=_form(format=fmt, model=model))
        return response.content

    async def estimate_flow(self, frame1: bytes, frame2: bytes, model: str | None) -> np.ndarray:
        return np.load(io.BytesIO(await self.flow_file(frame1, frame2, "npy", model)), allow_pickle=False)

    async def list_models(self) -> ModelList:
        return ModelList.model_validate_json((await self.request("GET", "/models")).content)

    async def health(self) -> Health:
        return Health.model_validate_json((await self.request("GET", "/health/ready", accept=(503,))).content)


def _fields(**fields: Any) -> dict[str, Any]:
    """Only the fields the caller set, so the server's defaults apply to the rest."""
    return {name: value for name, value in fields.items() if value is not None}


def _form(**fields: Any) -> dict[str, str]:
    """Form fields as the server parses them (booleans as true/false)."""
    return {name: str(value).lower() if isinstance(value, bool) else str(value)
            for name, value in _fields(**fields).items()}
