"""Paginators for ListSnapshotBlocks and ListChangedBlocks, with boto3's interface.

botocore ships no paginators for EBS; these follow botocore's paginator semantics (input and
output token ``NextToken``, limit key ``MaxResults``, ``PaginationConfig`` with ``MaxItems``,
``PageSize`` and ``StartingToken``, resume tokens that carry a truncation amount).
"""
from __future__ import annotations

import base64
import binascii
import json
from typing import Any, Callable, Iterator

from .exceptions import PaginationError

# operation python name -> (result key, non-aggregate keys kept in build_full_result)
PAGINATORS = {
    "list_snapshot_blocks": ("Blocks", ("ExpiryTime", "VolumeSize", "BlockSize")),
    "list_changed_blocks": ("ChangedBlocks", ("ExpiryTime", "VolumeSize", "BlockSize")),
}
_CONFIG_KEYS = {"MaxItems", "PageSize", "StartingToken"}


def encode_token(token: dict) -> str:
    """A resume token: base64 of a JSON object, as botocore's TokenEncoder writes it."""
    return base64.b64encode(json.dumps(token).encode("utf-8")).decode("utf-8")


def decode_token(token: str) -> dict:
    try:
        decoded = json.loads(base64.b64decode(token.encode("utf-8"), validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        decoded = None
    if not isinstance(decoded, dict) or "NextToken" not in decoded:
        raise PaginationError(message=f"Bad starting token: {token!r}. Pass the resume token "
                              "of an earlier build_full_result() or PageIterator.resume_token.")
    return decoded


class PageIterator:
    """Iterates pages (response dicts); ``result_key_iters()``-free, as EBS needs none."""

    def __init__(self, method: Callable[..., dict], result_key: str, non_aggregate: tuple,
                 params: dict, max_items: int | None, page_size: int | None,
                 starting_token: str | None, raw_method: Callable[..., bytes] | None = None):
        self._method = method
        self._raw_method = raw_method
        self.result_key = result_key
        self._non_aggregate = non_aggregate
        self._params = params
        self._max_items = max_items
        self._page_size = page_size
        self._starting_token = starting_token
        self.resume_token: str | None = None
        self.non_aggregate_part: dict = {}

    def _first_request(self) -> tuple[dict, int]:
        """The first page's parameters, and how many of its items an earlier run returned."""
        params = dict(self._params)
        skip = 0
        if self._starting_token is not None:
            start = decode_token(self._starting_token)
            if start["NextToken"] is not None:
                params["NextToken"] = start["NextToken"]
            skip = int(start.get("boto_truncate_amount", 0))
        if self._page_size is not None:
            params["MaxResults"] = self._page_size
        return params, skip

    def __iter__(self) -> Iterator[dict]:
        params, skip = self._first_request()
        total = 0
        first = True
        while True:
            response = self._method(**params)
            items = response.get(self.result_key, [])
            offset = skip  # items of this page returned before the last resume token
            if skip:
                # Resume inside a page: the items before the cut were returned last time.
                response[self.result_key] = items = items[skip:]
                skip = 0
            if first:
                self.non_aggregate_part = {k: response[k] for k in self._non_aggregate
                                           if k in response}
                first = False
            next_token = response.get("NextToken")
            if self._max_items is not None and total + len(items) >= self._max_items:
                keep = self._max_items - total
                truncated = len(items) - keep
                response[self.result_key] = items[:keep]
                if truncated > 0:
                    resume = {"NextToken": params.get("NextToken"),
                              "boto_truncate_amount": offset + keep}
                    self.resume_token = encode_token(resume)
                elif next_token:
                    self.resume_token = encode_token({"NextToken": next_token})
                yield response
                return
            total += len(items)
            yield response
            if not next_token:
                return
            if next_token == params.get("NextToken"):
                raise PaginationError(message=f"The same next token was received twice: "
                                      f"{next_token}")
            params["NextToken"] = next_token

    def columns(self):
        """All pages as numpy columns instead of dicts (an ebsfast addition, for snapshots
        with millions of blocks): a :class:`ebsfast.blocklist.BlockList` for
        list_snapshot_blocks, a :class:`ebsfast.blocklist.ChangedBlockList` for
        list_changed_blocks. Pages are parsed in C straight into arrays; no per-block Python
        object is made. ``PageSize``, ``StartingToken`` and ``MaxItems`` apply as to pages;
        when ``MaxItems`` stops it early, ``resume_token`` is set as iterating would set it."""
        from . import _backend
        from .blocklist import BlockList, ChangedBlockList

        if self._raw_method is None:
            raise PaginationError(message="columns() needs a client that returns raw pages")
        parse = _backend.load("pages").parse_columns
        kind = "blocks" if self.result_key == "Blocks" else "changed"
        params, skip = self._first_request()
        pages = []
        total = 0
        while True:
            page = parse(self._raw_method(**params), kind)
            pages.append(page)
            total += len(page)
            if self._max_items is not None and total - skip >= self._max_items:
                break
            if not page.next_token:
                break
            if page.next_token == params.get("NextToken"):
                raise PaginationError(message=f"The same next token was received twice: "
                                      f"{page.next_token}")
            params["NextToken"] = page.next_token
        result = (BlockList if kind == "blocks" else ChangedBlockList).from_pages(pages)
        self.resume_token = None
        if self._max_items is not None:
            stop = skip + self._max_items  # in the items of the pages fetched
            if stop < total:  # cut inside the last page: resume there
                self.resume_token = encode_token({
                    "NextToken": params.get("NextToken"),
                    "boto_truncate_amount": stop - (total - len(pages[-1]))})
            elif pages[-1].next_token:
                self.resume_token = encode_token({"NextToken": pages[-1].next_token})
        if skip or self._max_items is not None:
            stop = None if self._max_items is None else skip + self._max_items
            result = result.select(slice(skip, stop))
        return result

    def build_full_result(self) -> dict:
        """Every page's items in one list, plus the first page's other keys; ``NextToken`` is
        the resume token when MaxItems stopped early."""
        items: list = []
        for page in self:
            items.extend(page.get(self.result_key, []))
        result: dict[str, Any] = {self.result_key: items}
        result.update(self.non_aggregate_part)
        if self.resume_token is not None:
            result["NextToken"] = self.resume_token
        return result


class Paginator:
    def __init__(self, method: Callable[..., dict], operation: str,
                 raw_method: Callable[..., bytes] | None = None):
        self._method = method
        self._raw_method = raw_method
        self._operation = operation
        self._result_key, self._non_aggregate = PAGINATORS[operation]

    @property
    def result_keys(self) -> list[str]:
        return [self._result_key]

    def paginate(self, **kwargs: Any) -> PageIterator:
        config = kwargs.pop("PaginationConfig", None) or {}
        unknown = set(config) - _CONFIG_KEYS
        if unknown:
            raise PaginationError(message=f"PaginationConfig has unknown key(s) "
                                  f"{sorted(unknown)}; known: {sorted(_CONFIG_KEYS)}")
        if "NextToken" in kwargs:
            raise PaginationError(message="Pass the starting point as PaginationConfig="
                                  "{'StartingToken': ...}, not NextToken.")
        for key in ("MaxItems", "PageSize"):
            v = config.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise PaginationError(message=f"PaginationConfig {key} must be a positive "
                                      f"integer, got {v!r}")
        return PageIterator(self._method, self._result_key, self._non_aggregate, kwargs,
                            config.get("MaxItems"), config.get("PageSize"),
                            config.get("StartingToken"), self._raw_method)
