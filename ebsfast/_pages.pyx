# cython: language_level=3, embedsignature=True
"""ListSnapshotBlocks / ListChangedBlocks response pages, native: the same API as
``ebsfast._pages_py`` (read that module for the rules) with the parsing done by
``_csrc/pages.c``.

The C scan runs without the GIL and leaves the page in C columns. ``parse_page`` then makes
the dicts botocore would (the only per-entry work under the GIL); ``parse_columns`` copies the
columns into numpy arrays and one bytes blob per token kind, making no per-entry objects.
"""
import sys

import numpy as np

cimport numpy as cnp
from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize, PyBytes_GET_SIZE
from cpython.list cimport PyList_New
from cpython.long cimport PyLong_FromString
from cpython.object cimport PyObject
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.ref cimport Py_DECREF, Py_INCREF
from libc.stdint cimport int64_t, uint8_t
from libc.string cimport memcpy

cdef extern from "Python.h":
    """
    #define ebs_list_items(op) ((void *)((PyListObject *)(op))->ob_item)

    /* Token text as a new str. Tokens are base64, so an ASCII one is made by hand: the UTF-8
     * decoder would scan the bytes once more for nothing (PyUnicode_DecodeASCII does too). */
    static inline PyObject *ebs_text(const char *p, Py_ssize_t n, int ascii)
    {
        if (!ascii)
            return PyUnicode_DecodeUTF8(p, n, NULL);
        PyObject *s = PyUnicode_New(n, 127);
        if (s && n)
            memcpy(PyUnicode_DATA(s), p, (size_t)n);
        return s;
    }

    /* d[key] = value, taking over the new reference `value` (NULL: its maker failed). */
    static inline int ebs_dict_put(PyObject *d, PyObject *key, PyObject *value)
    {
        if (!value)
            return -1;
        int rc = PyDict_SetItem(d, key, value);
        Py_DECREF(value);
        return rc;
    }

    """
    void *PyList_GET_ITEM_PTR "ebs_list_items"(object op)
    PyObject *ebs_text(const char *p, Py_ssize_t n, int ascii) except NULL
    object _text "ebs_text"(const char *p, Py_ssize_t n, int ascii)
    int ebs_dict_put(PyObject *d, PyObject *key, PyObject *value) except -1
    PyObject *ebs_dict_new "PyDict_New"() except NULL
    PyObject *ebs_int "PyLong_FromLongLong"(long long v)
    double PyOS_string_to_double(const char *s, char **endptr,
                                 PyObject *overflow_exception) except? -1.0

cnp.import_array()

IMPLEMENTATION = "native"
KINDS = ("blocks", "changed")

# Made once: every dict of a 10,000-entry page shares these key objects.
cdef str K_BLOCKS = sys.intern("Blocks")
cdef str K_CHANGED_BLOCKS = sys.intern("ChangedBlocks")
cdef str K_BLOCK_INDEX = sys.intern("BlockIndex")
cdef str K_BLOCK_TOKEN = sys.intern("BlockToken")
cdef str K_FIRST_TOKEN = sys.intern("FirstBlockToken")
cdef str K_SECOND_TOKEN = sys.intern("SecondBlockToken")
cdef str K_EXPIRY_TIME = sys.intern("ExpiryTime")
cdef str K_VOLUME_SIZE = sys.intern("VolumeSize")
cdef str K_BLOCK_SIZE = sys.intern("BlockSize")
cdef str K_NEXT_TOKEN = sys.intern("NextToken")

_EXPECTED = {
    "Blocks": "an array or null",
    "ChangedBlocks": "an array or null",
    "Blocks entry": "an object or null",
    "ChangedBlocks entry": "an object or null",
    "BlockIndex": "an integer or null",
    "BlockToken": "a string or null",
    "FirstBlockToken": "a string or null",
    "SecondBlockToken": "a string or null",
    "ExpiryTime": "a number or null",
    "VolumeSize": "an integer or null",
    "BlockSize": "an integer or null",
    "NextToken": "a string or null",
}


# One set of scan buffers kept between calls: a fresh 1.5 MB of columns per page costs a page
# fault per 4 KiB on first touch, measured at about as much as the whole C scan. Taken and
# given back with the GIL held; a call that finds it taken (another thread is scanning)
# allocates its own.
cdef ebs_page _spare
cdef bint _spare_busy = False
# Scan buffers beyond this (a freak page) are freed rather than kept.
cdef size_t SPARE_MAX_BYTES = 64 << 20
ebs_page_init(&_spare, EBS_PAGE_BLOCKS, 0)


cdef ebs_page *_take(ebs_page *own, int kind, int strict) noexcept:
    global _spare_busy
    if not _spare_busy:
        _spare_busy = True
        ebs_page_reset(&_spare, kind, strict)
        return &_spare
    ebs_page_init(own, kind, strict)
    return own


cdef void _give(ebs_page *pg) noexcept:
    global _spare_busy
    if pg != &_spare:
        ebs_page_free(pg)
        return
    if ebs_page_footprint(pg) > SPARE_MAX_BYTES:
        ebs_page_free(pg)
    _spare_busy = False


cdef class Columns:
    """One page in columns: ``indexes`` (int64), tokens as one bytes blob per token kind with
    int64 ``offsets`` (token i is ``blob[offsets[i]:offsets[i + 1]]``), and the page scalars.

    For ``kind == "blocks"``: ``tokens``/``offsets``; the ``first*``/``second*``/``has_*``
    members are None. For ``kind == "changed"``: ``first``/``first_offsets``,
    ``second``/``second_offsets`` (an absent token is an empty slice) and the bool arrays
    ``has_first``/``has_second``; ``tokens``/``offsets`` are None.
    """

    def __init__(self, str kind, indexes, *, tokens=None, offsets=None, first=None,
                 first_offsets=None, second=None, second_offsets=None, has_first=None,
                 has_second=None, expiry_time=None, volume_size=None, block_size=None,
                 next_token=None):
        self.kind = kind
        self.indexes = indexes
        self.tokens = tokens
        self.offsets = offsets
        self.first = first
        self.first_offsets = first_offsets
        self.second = second
        self.second_offsets = second_offsets
        self.has_first = has_first
        self.has_second = has_second
        self.expiry_time = expiry_time
        self.volume_size = volume_size
        self.block_size = block_size
        self.next_token = next_token

    def __len__(self):
        return len(self.indexes)

    def __repr__(self):
        more = "" if self.next_token is None else ", more pages"
        return f"<Columns {self.kind}: {len(self)} entries{more}>"


cdef int _kind(str kind) except -1:
    if kind == "blocks":
        return EBS_PAGE_BLOCKS
    if kind == "changed":
        return EBS_PAGE_CHANGED
    raise ValueError(f"kind must be 'blocks' or 'changed', not {kind!r}")


cdef int _raise(ebs_page *pg, int rc, str kind) except -1:
    if rc == EBS_PAGE_ENOMEM:
        raise MemoryError()
    key = pg.err_key.decode() if pg.err_key != NULL else None
    if rc == EBS_PAGE_ETYPE:
        what = f"{key} must be {_EXPECTED[key]}"
    elif rc == EBS_PAGE_ERANGE:
        what = f"{key} is outside the int64 range"
    elif rc == EBS_PAGE_EMISSING:
        if key.endswith(" entry"):
            what = f"null {key} (the columnar form has no place for it)"
        else:
            what = f"entry has no {key} (the columnar form needs one)"
    else:
        what = ebs_page_strerror(rc).decode()
    raise ValueError(f"invalid {kind} page at byte {pg.err_pos}: {what}")


cdef int _scan(ebs_page *pg, object body, str kind) except -1:
    """Runs the C scan over any bytes-like body; raises ValueError on a bad page."""
    cdef Py_buffer view
    cdef const char *p
    cdef size_t n
    cdef int rc
    if type(body) is bytes:
        p = PyBytes_AS_STRING(body)
        n = <size_t>PyBytes_GET_SIZE(body)
        with nogil:
            rc = ebs_page_parse(pg, p, n)
    else:
        PyObject_GetBuffer(body, &view, PyBUF_SIMPLE)
        try:
            with nogil:
                rc = ebs_page_parse(pg, view.buf, <size_t>view.len)
        finally:
            PyBuffer_Release(&view)
    if rc != EBS_PAGE_OK:
        _raise(pg, rc, kind)
    return 0


cdef object _expiry(ebs_page *pg):
    # int() and float() of the literal are exactly what json.loads makes of it.
    if pg.expiry_is_int:
        return PyLong_FromString(pg.expiry.data, NULL, 10)
    return PyOS_string_to_double(pg.expiry.data, NULL, NULL)


# Every PIN_STRIDE-th token str of the last dict page, kept until the next parse_page.
#
# A 10,000-entry page is ~4 MB of small objects in pymalloc's 1 MiB arenas (256 KiB before
# 3.10). When the caller drops the page, pymalloc gives every arena left empty but one back to
# the OS, and the next page faults those pages back in, zeroed by the kernel: in a loop that
# parses and drops pages, ~250 faults per page, measured at ~0.75 ms of a 2.5 ms call here.
# One live object keeps an arena mapped, and token strs are made between the dicts all
# through the page's arenas, so a few dozen of them keep every one of those arenas for the
# next page (measured: no faults). They are immutable and the caller has them anyway, so
# nothing mutable is shared; the cost is that the last page's arenas (~4 MB for 10,000
# entries) stay mapped until the next parse_page.
cdef list _pins = []
cdef Py_ssize_t PIN_STRIDE = 128  # a power of two


cdef list _entries(ebs_page *pg):
    cdef Py_ssize_t i = 0, n = <Py_ssize_t>pg.n
    cdef uint8_t f
    cdef int64_t a
    cdef bint changed = pg.kind == EBS_PAGE_CHANGED
    cdef bint ascii0 = not (pg.non_ascii & EBS_PAGE_NONASCII_TOKEN0)
    cdef bint ascii1 = not (pg.non_ascii & EBS_PAGE_NONASCII_TOKEN1)
    # Borrowed: the module keeps the key strs alive.
    cdef PyObject *k_index = <PyObject *>K_BLOCK_INDEX
    cdef PyObject *k_token0 = <PyObject *>(K_FIRST_TOKEN if changed else K_BLOCK_TOKEN)
    cdef PyObject *k_token1 = <PyObject *>K_SECOND_TOKEN
    cdef PyObject *d
    cdef PyObject *text
    cdef list out
    cdef list pins = []
    # The entries wait in a C array and go into the list at the end: a list is tracked by the
    # GC from birth, and each young collection (one per 700 new dicts) would walk all of it.
    # The dicts themselves are never tracked (they hold only ints and strs), so those
    # collections find an almost empty young generation and cost about a microsecond each.
    # (Pausing the GC over this loop saves nothing: the collection owed then runs at the
    # caller's next allocation and walks this list, ~0.2 ms by gc.callbacks; whole calls
    # measured the same either way, so the simpler code stays.)
    cdef PyObject **items = <PyObject **>PyMem_Malloc(<size_t>(n if n else 1) * sizeof(PyObject *))
    if items == NULL:
        raise MemoryError()
    try:
        while i < n:
            f = pg.flags[i]
            if f & EBS_ENTRY_NULL:
                Py_INCREF(None)
                items[i] = <PyObject *>None
                i += 1
                continue
            d = ebs_dict_new()
            items[i] = d  # owned by items from here, so an error below frees it
            i += 1
            if f & EBS_ENTRY_INDEX:
                ebs_dict_put(d, k_index, ebs_int(pg.index[i - 1]))
            if f & EBS_ENTRY_TOKEN0:
                a = pg.off[0][i - 1]
                text = ebs_text(pg.tok[0].data + a, pg.off[0][i] - a, ascii0)
                ebs_dict_put(d, k_token0, text)
                if (i & (PIN_STRIDE - 1)) == 1:
                    pins.append(<object>text)  # (d holds it)
            if f & EBS_ENTRY_TOKEN1:
                a = pg.off[1][i - 1]
                text = ebs_text(pg.tok[1].data + a, pg.off[1][i] - a, ascii1)
                ebs_dict_put(d, k_token1, text)
                if (i & (PIN_STRIDE - 1)) == 1:
                    pins.append(<object>text)
        out = PyList_New(n)
        if n:  # an empty list has no item array (memcpy to NULL is undefined even for 0)
            memcpy(PyList_GET_ITEM_PTR(out), items, <size_t>n * sizeof(PyObject *))
        i = 0  # the list owns them now
    finally:
        while i > 0:
            i -= 1
            Py_DECREF(<object>items[i])
        PyMem_Free(items)
    global _pins
    _pins = pins  # only now: the previous page's pins held its arenas while this one was made
    return out


def parse_page(body, str kind not None) -> dict:
    """The page as botocore's parser returns it (without ResponseMetadata), except that
    ``ExpiryTime`` is the number from the body. ``kind`` is ``"blocks"`` (ListSnapshotBlocks)
    or ``"changed"`` (ListChangedBlocks); ``body`` is any bytes-like object."""
    cdef ebs_page own
    cdef ebs_page *pg = _take(&own, _kind(kind), 0)
    try:
        _scan(pg, body, kind)
        # Keys in the model's member order, as botocore builds them.
        page = {}
        if pg.present & EBS_PAGE_LIST:
            page[K_CHANGED_BLOCKS if pg.kind == EBS_PAGE_CHANGED else K_BLOCKS] = _entries(pg)
        if pg.present & EBS_PAGE_EXPIRY:
            page[K_EXPIRY_TIME] = _expiry(pg)
        if pg.present & EBS_PAGE_VOLUME_SIZE:
            page[K_VOLUME_SIZE] = pg.volume_size
        if pg.present & EBS_PAGE_BLOCK_SIZE:
            page[K_BLOCK_SIZE] = pg.block_size
        if pg.present & EBS_PAGE_NEXT_TOKEN:
            page[K_NEXT_TOKEN] = _text(pg.next_token.data, <Py_ssize_t>pg.next_token.len,
                                       not (pg.non_ascii & EBS_PAGE_NONASCII_NEXT))
        return page
    finally:
        _give(pg)


cdef object _int64_array(const int64_t *src, Py_ssize_t n):
    cdef cnp.npy_intp dims[1]
    dims[0] = n
    cdef cnp.ndarray arr = cnp.PyArray_EMPTY(1, dims, cnp.NPY_INT64, 0)
    cdef void *dst = cnp.PyArray_DATA(arr)
    if n:
        with nogil:
            memcpy(dst, src, <size_t>n * sizeof(int64_t))
    return arr


cdef object _has_array(const uint8_t *flags, Py_ssize_t n, uint8_t bit):
    cdef cnp.npy_intp dims[1]
    cdef Py_ssize_t i
    cdef uint8_t *dst
    dims[0] = n
    cdef cnp.ndarray arr = cnp.PyArray_EMPTY(1, dims, cnp.NPY_BOOL, 0)
    dst = <uint8_t *>cnp.PyArray_DATA(arr)
    with nogil:
        for i in range(n):
            dst[i] = (flags[i] & bit) != 0
    return arr


cdef tuple _token_column(ebs_page *pg, int k):
    cdef Py_ssize_t n = <Py_ssize_t>pg.n
    if pg.off[k] == NULL:  # no list in the page: nothing was allocated
        return b"", np.zeros(1, dtype=np.int64)
    blob = PyBytes_FromStringAndSize(pg.tok[k].data, <Py_ssize_t>pg.off[k][n])
    return blob, _int64_array(pg.off[k], n + 1)


def parse_columns(body, str kind not None) -> Columns:
    """The page in columns (see ``Columns``). Stricter than ``parse_page`` where a column has
    no place for something: every entry needs a ``BlockIndex`` (and, for ``"blocks"``, a
    ``BlockToken``), and a null entry is a ``ValueError``."""
    cdef ebs_page own
    cdef Columns cols
    cdef Py_ssize_t n
    cdef ebs_page *pg = _take(&own, _kind(kind), 1)
    try:
        _scan(pg, body, kind)
        n = <Py_ssize_t>pg.n
        cols = Columns(
            kind, _int64_array(pg.index, n),
            expiry_time=_expiry(pg) if pg.present & EBS_PAGE_EXPIRY else None,
            volume_size=pg.volume_size if pg.present & EBS_PAGE_VOLUME_SIZE else None,
            block_size=pg.block_size if pg.present & EBS_PAGE_BLOCK_SIZE else None,
            next_token=_text(pg.next_token.data, <Py_ssize_t>pg.next_token.len,
                             not (pg.non_ascii & EBS_PAGE_NONASCII_NEXT))
            if pg.present & EBS_PAGE_NEXT_TOKEN else None,
        )
        if pg.kind == EBS_PAGE_BLOCKS:
            cols.tokens, cols.offsets = _token_column(pg, 0)
        else:
            cols.first, cols.first_offsets = _token_column(pg, 0)
            cols.second, cols.second_offsets = _token_column(pg, 1)
            cols.has_first = _has_array(pg.flags, n, EBS_ENTRY_TOKEN0)
            cols.has_second = _has_array(pg.flags, n, EBS_ENTRY_TOKEN1)
        return cols
    finally:
        _give(pg)
