"""ebsfast's signer against botocore's (SigV4Auth, SigV4QueryAuth) on random requests, the
native module against its twin, and the signer's safety properties.

botocore reads the clock through ``botocore.auth.get_current_datetime``; patching it pins
the timestamp the way botocore's own tests pin it.
"""
from __future__ import annotations

import datetime
import threading
from unittest import mock
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

botocore_auth = pytest.importorskip("botocore.auth")
from botocore.awsrequest import AWSRequest  # noqa: E402
from botocore.credentials import Credentials  # noqa: E402

ACCESS_KEY = "AKIDEXAMPLE"
SECRET_KEY = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
HOST = "ebs.us-east-1.amazonaws.com"
EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

SETTINGS = settings(max_examples=150, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])

# ---------------------------------------------------------------- strategies

# Characters that stress the encoders: reserved, '%', non-ASCII (2-, 3- and 4-byte UTF-8).
tricky = st.characters(codec="utf-8", exclude_categories=("Cs",))
segment_text = st.text(tricky, max_size=8)


def _wire_segment(draw_text: str) -> str:
    # botocore's rest serializer encodes a URI label with safe '-_.~' (percent_encode).
    return quote(draw_text, safe="-_.~")


# Literal characters a request-line path may carry besides %XX (RFC 3986 pchar + '/').
raw_path_chars = st.sampled_from(list("abcXYZ019-._~!$&'()*+,;=:@%") + ["é", "ሴ", "😀"])


@st.composite
def wire_paths(draw):
    parts = draw(st.lists(
        st.one_of(
            segment_text.map(_wire_segment),
            st.sampled_from(["", ".", "..", "%2E", "a b", "%20", "%2F"]),
            st.text(raw_path_chars, max_size=6),
        ),
        max_size=6,
    ))
    path = "/" + "/".join(parts)
    if draw(st.booleans()):
        path += "/"
    return path


@st.composite
def wire_queries(draw):
    kind = draw(st.integers(0, 2))
    if kind == 0:
        pairs = draw(st.lists(st.tuples(segment_text, segment_text), max_size=5))
        return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)
    if kind == 1:
        # blockToken-like: base64 alphabet, encoded.
        token = draw(st.text(st.sampled_from(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="), max_size=40))
        return f"blockToken={quote(token, safe='-_.~')}"
    # Anything a wire query might hold: bare keys, empty pairs, repeats, raw non-ASCII.
    return draw(st.text(st.sampled_from(list("ab=&%2F+ ~é") + ["ሴ"]), max_size=16))


token_names = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                      "0123456789-_"), min_size=1, max_size=12)
# Header values: runs of every kind of whitespace str.split() knows, minus CR and LF.
value_chars = st.one_of(
    st.sampled_from([" ", "  ", "\t", "\x0b", "\x0c", "\x1c", "\x1f", "\x85", "\xa0", "\u1680",
                     "\u2000", "\u200a", "\u2028", "\u202f", "\u205f", "\u3000", "\u200b",
                     "a", "B", "7", ",", ";", ":", "é", "ሴ"]),
    tricky.filter(lambda c: c not in "\r\n"),
)
header_values = st.lists(value_chars, max_size=12).map("".join)
RESERVED = {"authorization", "x-amz-date", "date", "x-amz-security-token",
            "x-amz-content-sha256"}


@st.composite
def header_lists(draw):
    names = draw(st.lists(
        st.one_of(token_names, st.sampled_from(["User-Agent", "Expect", "X-Amzn-Trace-Id",
                                                "Content-Type", "X-Amz-Checksum", "TE"])),
        max_size=5,
    ).map(lambda ns: [n for n in ns if n.lower() not in RESERVED and n.lower() != "host"]))
    headers = [(n, draw(header_values)) for n in names]
    if names and draw(st.booleans()):
        headers.append((names[0], draw(header_values)))  # a repeated name
    headers.insert(draw(st.integers(0, len(headers))), (draw(st.sampled_from(["Host", "host"])),
                                                         HOST))
    return headers


methods = st.one_of(st.sampled_from(["GET", "PUT", "POST", "DELETE", "HEAD", "get", "Patch"]))
tokens = st.one_of(st.none(), st.text(st.sampled_from("AQoDYXdz+/=EPT"), min_size=1,
                                      max_size=40), st.just("tok  with   spaces"))
dates = st.sampled_from([datetime.datetime(2015, 8, 30, 12, 36, 0),
                         datetime.datetime(2024, 2, 29, 23, 59, 59),
                         datetime.datetime(2031, 1, 1, 0, 0, 0)])


def amz(d: datetime.datetime) -> str:
    return d.strftime("%Y%m%dT%H%M%SZ")


# ---------------------------------------------------------------- botocore side

def botocore_request(method, url, headers):
    req = AWSRequest(method=method, url=url, data=b"")
    for name, value in headers:
        req.headers[name] = value  # HTTPHeaders appends: repeated names survive
    return req


def botocore_sign(method, url, headers, token, when, *, unsigned_payload=False):
    req = botocore_request(method, url, headers)
    if unsigned_payload:
        req.context["payload_signing_enabled"] = False
    signer = botocore_auth.SigV4Auth(Credentials(ACCESS_KEY, SECRET_KEY, token), "ebs",
                                     "us-east-1")
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        signer.add_auth(req)
    return req


def botocore_presign(method, url, headers, token, when, expires):
    req = botocore_request(method, url, headers)
    signer = botocore_auth.SigV4QueryAuth(Credentials(ACCESS_KEY, SECRET_KEY, token), "ebs",
                                          "us-east-1", expires=expires)
    with mock.patch("botocore.auth.get_current_datetime", return_value=when):
        signer.add_auth(req)
    return req.url


def split_url(path, query):
    return f"https://{HOST}{path}" + (f"?{query}" if query else "")


# ---------------------------------------------------------------- cross-checks

@SETTINGS
@given(method=methods, path=wire_paths(), query=wire_queries(), headers=header_lists(),
       token=tokens, when=dates)
def test_sign_matches_botocore(sigv4_impl, method, path, query, headers, token, when):
    url = split_url(path, query)
    req = botocore_sign(method, url, headers, token, when)
    ours = sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs", token)
    added = ours.sign(method, path, query, headers, None, amz(when))
    assert added["Authorization"] == req.headers["Authorization"]
    assert added["X-Amz-Date"] == req.headers["X-Amz-Date"]
    assert added.get("X-Amz-Security-Token") == req.headers.get("X-Amz-Security-Token")


@SETTINGS
@given(path=wire_paths(), query=wire_queries(), headers=header_lists(), token=tokens,
       when=dates)
def test_unsigned_payload_matches_botocore(sigv4_impl, path, query, headers, token, when):
    """PutSnapshotBlock (auth type v4-unsigned-body): botocore sets
    payload_signing_enabled=False, which adds and signs X-Amz-Content-SHA256:
    UNSIGNED-PAYLOAD and uses it as the payload hash."""
    url = split_url(path, query)
    req = botocore_sign("PUT", url, headers, token, when, unsigned_payload=True)
    ours = sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs", token)
    added = ours.sign("PUT", path, query, headers, sigv4_impl.UNSIGNED_PAYLOAD, amz(when),
                      content_sha256=True)
    assert added["X-Amz-Content-SHA256"] == req.headers["X-Amz-Content-SHA256"]
    assert added["Authorization"] == req.headers["Authorization"]


@SETTINGS
@given(method=methods, path=wire_paths(), query=wire_queries(), headers=header_lists(),
       token=tokens, when=dates)
def test_fast_path_matches_botocore(sigv4_impl, method, path, query, headers, token, when):
    url = split_url(path, query)
    req = botocore_sign(method, url, headers, token, when)
    ours = sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs", token)
    block, names = sigv4_impl.canonical_headers(headers)
    auth = ours.authorization(method, path, sigv4_impl.canonical_query(query), block, names,
                              EMPTY, amz(when))
    assert auth == req.headers["Authorization"]


@SETTINGS
@given(method=methods, path=wire_paths(), query=wire_queries(), headers=header_lists(),
       token=tokens, when=dates, expires=st.integers(1, 604800))
def test_presign_matches_botocore(sigv4_impl, method, path, query, headers, token, when,
                                  expires):
    url = split_url(path, query)
    expected = botocore_presign(method, url, headers, token, when, expires)
    ours = sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs", token)
    assert ours.presign(method, url, expires, amz(when), headers=headers) == expected


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded; charset=utf-8",
                                          "application/json"])
def test_presign_content_type_as_botocore(sigv4_impl, content_type):
    when = datetime.datetime(2015, 8, 30, 12, 36, 0)
    headers = [("Host", HOST), ("Content-Type", content_type)]
    url = f"https://{HOST}/snapshots?a=1&b=%2F&a=2&c"
    expected = botocore_presign("GET", url, headers, None, when, 60)
    ours = sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs")
    assert ours.presign("GET", url, 60, amz(when), headers=headers) == expected


def test_presign_host_from_url_as_botocore(sigv4_impl):
    when = datetime.datetime(2015, 8, 30, 12, 36, 0)
    ours = sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs", "tok")
    for url in ["https://EBS.example.com:443/x", "http://ebs.example.com:8080/x y",
                "https://user:pw@ebs.example.com/", "http://[::1]:9000/snapshots",
                "https://ebs.example.com"]:
        assert ours.presign("GET", url, 3600, amz(when)) == \
            botocore_presign("GET", url, [], "tok", when, 3600), url


def test_content_sha256_header_is_the_payload_hash_as_in_botocore(sigv4_impl):
    when = datetime.datetime(2015, 8, 30, 12, 36, 0)
    headers = [("Host", HOST), ("X-Amz-Content-SHA256", "abc123")]
    req = botocore_sign("POST", f"https://{HOST}/snapshots", headers, None, when)
    ours = sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs")
    assert ours.sign("POST", "/snapshots", "", headers, None, amz(when))["Authorization"] == \
        req.headers["Authorization"]
    with pytest.raises(ValueError):
        ours.sign("POST", "/snapshots", "", headers, EMPTY, amz(when))


def test_replaces_headers_botocore_replaces(sigv4_impl):
    when = datetime.datetime(2015, 8, 30, 12, 36, 0)
    headers = [("Host", HOST), ("Authorization", "stale"), ("X-Amz-Date", "20000101T000000Z"),
               ("X-Amz-Security-Token", "old")]
    req = botocore_sign("GET", f"https://{HOST}/", headers, "new", when)
    ours = sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs", "new")
    added = ours.sign("GET", "/", "", headers, None, amz(when))
    assert added["Authorization"] == req.headers["Authorization"]


def test_get_snapshot_block_shape(sigv4_impl):
    when = datetime.datetime(2024, 5, 1, 8, 0, 0)
    token = "AAUBAX" + "k" * 140 + "+/=="
    path = "/snapshots/snap-0123456789abcdef0/blocks/12345"
    query = f"blockToken={quote(token, safe='-_.~')}"
    headers = [("Host", HOST), ("User-Agent", "ebsfast/0.1")]
    req = botocore_sign("GET", split_url(path, query), headers, None, when)
    ours = sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs")
    assert ours.authorization("GET", path, query, f"host:{HOST}\n", "host", EMPTY,
                              amz(when)) == req.headers["Authorization"]


def test_excluded_headers_are_botocores(sigv4_impl):
    assert set(sigv4_impl.EXCLUDED_HEADERS) == set(botocore_auth.SIGNED_HEADERS_BLACKLIST)
    assert sigv4_impl.UNSIGNED_PAYLOAD == botocore_auth.UNSIGNED_PAYLOAD
    assert sigv4_impl.EMPTY_SHA256 == botocore_auth.EMPTY_SHA256_HASH


# ---------------------------------------------------------------- native vs twin

def _outcome(fn, *args, **kwargs):
    try:
        return ("ok", fn(*args, **kwargs))
    except (ValueError, TypeError) as exc:
        return ("error", type(exc))


any_text = st.text(st.one_of(tricky, st.sampled_from(list("/.%&=;:\r\n \t"))), max_size=24)


@SETTINGS
@given(s=any_text, slash=st.booleans())
def test_differential_encoding(sigv4_native, sigv4_twin, s, slash):
    for fn in ("normalize_path", "canonical_query"):
        assert _outcome(getattr(sigv4_native, fn), s) == _outcome(getattr(sigv4_twin, fn), s)
    assert _outcome(sigv4_native.uri_encode, s, slash) == \
        _outcome(sigv4_twin.uri_encode, s, slash)
    for norm in (True, False):
        assert _outcome(sigv4_native.canonical_uri, s, norm) == \
            _outcome(sigv4_twin.canonical_uri, s, norm)


@SETTINGS
@given(pairs=st.lists(st.tuples(any_text, st.one_of(any_text, st.integers())), max_size=4))
def test_differential_query_pairs(sigv4_native, sigv4_twin, pairs):
    assert _outcome(sigv4_native.canonical_query, pairs) == \
        _outcome(sigv4_twin.canonical_query, pairs)
    assert _outcome(sigv4_native.canonical_query, dict(pairs)) == \
        _outcome(sigv4_twin.canonical_query, dict(pairs))


@SETTINGS
@given(headers=st.lists(st.tuples(st.one_of(token_names, any_text),
                                  st.one_of(any_text, header_values)), max_size=5),
       method=st.one_of(methods, any_text), path=any_text, query=any_text,
       date=st.one_of(st.sampled_from(["20150830T123600Z", "20150830T1236Z"]), any_text))
def test_differential_requests(sigv4_native, sigv4_twin, headers, method, path, query, date):
    def run(impl):
        out = [_outcome(impl.canonical_headers, headers),
               _outcome(impl.canonical_request, method, path, query, headers, EMPTY),
               _outcome(impl.string_to_sign, date, "scope", "creq")]
        signer = impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs", "t  k")
        out.append(_outcome(signer.sign, method, path, query, headers + [("host", HOST)],
                            None, date))
        out.append(_outcome(signer.authorization, method, path, query, path, query, EMPTY,
                            date))
        return out

    assert run(sigv4_native) == run(sigv4_twin)


# ---------------------------------------------------------------- safety properties

@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\r\nX-Injected: 1", "\n"])
def test_cr_lf_in_header_value_rejected(sigv4_impl, bad):
    signer = sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs")
    headers = [("Host", HOST), ("X-Amz-Checksum", bad)]
    with pytest.raises(ValueError, match="CR or LF"):
        sigv4_impl.canonical_headers(headers)
    with pytest.raises(ValueError, match="CR or LF"):
        sigv4_impl.canonical_request("GET", "/", "", headers, EMPTY)
    with pytest.raises(ValueError, match="CR or LF"):
        signer.sign("GET", "/", "", headers, None, "20150830T123600Z")
    with pytest.raises(ValueError):
        signer.authorization("GET", "/", "", f"host:{HOST}\nx-amz-checksum:{bad}\n",
                             "host;x-amz-checksum", EMPTY, "20150830T123600Z")
    with pytest.raises(ValueError):
        sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs", f"tok{bad}")


@pytest.mark.parametrize("name", ["", "a b", "a:b", "x\r\ny", "é"])
def test_bad_header_name_rejected(sigv4_impl, name):
    with pytest.raises(ValueError):
        sigv4_impl.canonical_headers([(name, "v")])


def test_fast_path_rejects_merged_names(sigv4_impl):
    signer = sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs", "tok")
    d = "20150830T123600Z"
    for block, names in [(f"host:{HOST}\nx-amz-date:{d}\n", "host"),
                         (f"host:{HOST}\n", "host;x-amz-date"),
                         (f"host:{HOST}\nx-amz-security-token:tok\n", "host"),
                         (f"host:{HOST}", "host"), ("host\n", "host")]:
        with pytest.raises(ValueError):
            signer.authorization("GET", "/", "", block, names, EMPTY, d)


def test_repr_hides_secrets(sigv4_impl):
    secret, token = "s3cr3t/KEY+value", "SESSIONTOKENVALUE"
    signer = sigv4_impl.Signer("AKIDREPR", secret, "us-east-1", "ebs", token)
    signer.sign("GET", "/", "", [("Host", HOST)], None, "20150830T123600Z")
    for text in (repr(signer), str(signer)):
        assert "AKIDREPR" in text
        assert secret not in text and token not in text
    assert not any(secret in str(getattr(signer, a, "")) for a in dir(signer)
                   if not a.startswith("_"))


def test_key_cache_follows_the_date(sigv4_impl):
    signer = sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs")
    days = ["20150830T235959Z", "20150831T000000Z", "20150830T120000Z"]
    for d in days:
        fresh = sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs")
        got = signer.sign("GET", "/", "", [("Host", HOST)], None, d)
        assert got == fresh.sign("GET", "/", "", [("Host", HOST)], None, d)
        assert signer.scope(d) == f"{d[:8]}/us-east-1/ebs/aws4_request"
        assert signer.signing_key(d) == sigv4_impl.derive_signing_key(SECRET_KEY, d[:8],
                                                                      "us-east-1", "ebs")
        block = f"host:{HOST}\n"
        assert signer.authorization("GET", "/", "", block, "host", EMPTY, d) == \
            got["Authorization"]


def test_key_cache_is_thread_safe(sigv4_impl):
    signer = sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs")
    days = [f"201508{d:02d}T120000Z" for d in range(1, 9)]
    want = {d: sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs").authorization(
        "GET", "/x", "", f"host:{HOST}\n", "host", EMPTY, d) for d in days}
    bad = []

    def worker(k):
        for i in range(300):
            d = days[(i + k) % len(days)]
            if signer.authorization("GET", "/x", "", f"host:{HOST}\n", "host", EMPTY,
                                    d) != want[d]:
                bad.append(d)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not bad


def test_amz_date(sigv4_impl):
    assert sigv4_impl.amz_date(1440938160) == "20150830T123600Z"
    assert sigv4_impl.amz_date(1440938160.9) == "20150830T123600Z"
    now = sigv4_impl.amz_date()
    assert len(now) == 16 and now.endswith("Z")


def test_bad_dates_rejected(sigv4_impl):
    signer = sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs")
    for d in ["2015-08-30T12:36:00Z", "20150830T123600", "20150830X123600Z", "x" * 16]:
        with pytest.raises(ValueError):
            signer.sign("GET", "/", "", [("Host", HOST)], None, d)
        with pytest.raises(ValueError):
            signer.authorization("GET", "/", "", f"host:{HOST}\n", "host", EMPTY, d)
    with pytest.raises(ValueError, match="host"):
        signer.sign("GET", "/", "", [("X-A", "b")], None, "20150830T123600Z")


def test_long_inputs_grow_buffers(sigv4_impl):
    # Past every stack buffer in the C core: the heap fallback must give the same result.
    signer = sigv4_impl.Signer(ACCESS_KEY, "k" * 200, "us-east-1", "ebs", "t" * 3000)
    path = "/" + "/".join(["seg%20ment"] * 300)
    query = "&".join(f"k{i}=v{i}" for i in range(100, 0, -1))
    headers = [("Host", HOST)] + [(f"X-H{i}", "v  " * 50) for i in range(40)]
    twin = pytest.importorskip("ebsfast._sigv4_py")
    ref = twin.Signer(ACCESS_KEY, "k" * 200, "us-east-1", "ebs", "t" * 3000)
    d = "20150830T123600Z"
    assert signer.sign("GET", path, query, headers, None, d) == \
        ref.sign("GET", path, query, headers, None, d)
    block, names = sigv4_impl.canonical_headers(headers)
    assert signer.authorization("GET", path, sigv4_impl.canonical_query(query), block, names,
                                EMPTY, d) == ref.sign("GET", path, query, headers, None,
                                                      d)["Authorization"]


def test_facade_exports_the_selected_backend():
    from ebsfast import _backend, signing

    impl = _backend.load("sigv4")
    for name in signing.__all__:
        assert getattr(signing, name) is getattr(impl, name), name


def test_signer_is_not_picklable(sigv4_impl):
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(sigv4_impl.Signer(ACCESS_KEY, SECRET_KEY, "us-east-1", "ebs"))


@pytest.mark.parametrize("expires, error", [(-5, ValueError), (604801, ValueError),
                                            (2 ** 70, ValueError), ("10", TypeError),
                                            (3600.9, TypeError), (True, TypeError)])
def test_presign_refuses_an_expiry_sigv4_cannot_carry(sigv4_impl, expires, error):
    signer = sigv4_impl.Signer("AKIDEXAMPLE", "secret", "us-east-1", "ebs")
    with pytest.raises(error, match="expires"):
        signer.presign("GET", "https://ebs.us-east-1.amazonaws.com/snapshots", expires)
    for ok in (0, 1, 604800):
        assert f"X-Amz-Expires={ok}&" in signer.presign(
            "GET", "https://ebs.us-east-1.amazonaws.com/snapshots", ok, "20261206T101010Z")
