"""Signer.prepare(): the client's hot path gives exactly what Signer.authorization gives."""
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
HOST = "ebs.us-east-1.amazonaws.com"
UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.~"


def _signer(impl, token=None):
    return impl.Signer("AKIDEXAMPLE", SECRET, "us-east-1", "ebs", session_token=token)


@settings(max_examples=60, deadline=None)
@given(index=st.integers(0, 2**31), token=st.text(alphabet=UNRESERVED + "%", min_size=1,
                                                  max_size=200),
       session=st.one_of(st.none(), st.text(alphabet=UNRESERVED, min_size=1, max_size=40)),
       put=st.booleans())
def test_prepared_equals_authorization(sigv4_impl, index, token, session, put):
    signer = _signer(sigv4_impl, session)
    headers = [("host", HOST)]
    payload = sigv4_impl.EMPTY_SHA256
    if put:
        headers.append(("x-amz-content-sha256", sigv4_impl.UNSIGNED_PAYLOAD))
        payload = sigv4_impl.UNSIGNED_PAYLOAD
    block, names = sigv4_impl.canonical_headers(headers)
    method = "PUT" if put else "GET"
    prepared = signer.prepare(method, block, names, payload)
    path = f"/snapshots/snap-0123456789abcdef0/blocks/{index}"
    query = f"blockToken={token}"
    date = "20261128T120000Z"
    assert prepared.authorization(path, query, date) == signer.authorization(
        method, path, query, block, names, payload, date)


def test_native_and_twin_agree(sigv4_native, sigv4_twin):
    out = []
    for impl in (sigv4_native, sigv4_twin):
        block, names = impl.canonical_headers([("host", HOST)])
        prepared = _signer(impl, "tok").prepare("GET", block, names, impl.EMPTY_SHA256)
        out.append(prepared.authorization("/snapshots/snap-1/blocks/7", "blockToken=AB%2B",
                                          "20261128T120000Z"))
    assert out[0] == out[1]


def test_prepare_validates_once(sigv4_impl):
    signer = _signer(sigv4_impl)
    with pytest.raises(ValueError):
        signer.prepare("GET", "host:x\r\n", "host", sigv4_impl.EMPTY_SHA256)
    with pytest.raises(ValueError):
        signer.prepare("G ET", "host:x\n", "host", sigv4_impl.EMPTY_SHA256)
    block, names = sigv4_impl.canonical_headers([("host", HOST)])
    prepared = signer.prepare("GET", block, names, sigv4_impl.EMPTY_SHA256)
    with pytest.raises(ValueError):
        prepared.authorization("/", "", "not-a-date")
    assert SECRET not in repr(prepared)
    with pytest.raises(TypeError):
        pickle.dumps(prepared)


def test_cached_string_to_sign_start_follows_the_date(sigv4_native, sigv4_twin):
    """The native signer reuses the string to sign's start within a second: switching dates
    (and days, so keys) back and forth must give the twin's signature every time."""
    signers = [_signer(m, "tok") for m in (sigv4_native, sigv4_twin)]
    prepared = []
    for m, s in zip((sigv4_native, sigv4_twin), signers):
        block, names = m.canonical_headers([("host", HOST)])
        prepared.append(s.prepare("GET", block, names, m.EMPTY_SHA256))
    for date in ["20261128T120000Z", "20261128T120001Z", "20261128T120000Z",
                 "20261129T000000Z", "20261128T120000Z", "20261128T120000Z"]:
        got = [p.authorization("/snapshots/snap-1/blocks/3", "blockToken=A", date)
               for p in prepared]
        assert got[0] == got[1], date


@pytest.mark.parametrize("names", [";", ";host", "host;", "host;;x-a"])
def test_empty_signed_header_names_are_refused(sigv4_impl, names):
    signer = _signer(sigv4_impl)
    with pytest.raises(ValueError):
        signer.authorization("GET", "/", "", "host:x\n", names, sigv4_impl.EMPTY_SHA256,
                             "20261128T120000Z")


def test_non_ascii_signed_header_names_come_back_intact(sigv4_native, sigv4_twin):
    out = [_signer(m).authorization("GET", "/", "", "host:x\n", "host;\u00e9t\u00e9",
                                    m.EMPTY_SHA256, "20261128T120000Z")
           for m in (sigv4_native, sigv4_twin)]
    assert out[0] == out[1] and "x-amz-date;\u00e9t\u00e9," in out[0]
