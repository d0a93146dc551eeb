/*
 * The relay's fast path for the common case: a run of complete, unfragmented
 * data frames in the read buffer, re-framed as server frames in place.
 *
 * forward(buf, pos, end, max_message) -> (new_pos, out_end, payload_bytes)
 *
 * Starting at buf[pos], every complete client frame that is a whole text or
 * binary message (FIN set, opcode 1 or 2, masked, no RSV bits, length within
 * max_message when max_message > 0) is rewritten as the unmasked server frame
 * a relay sends: header without the mask key, payload XORed with the mask.
 * A server frame is 4 bytes shorter than the client frame it comes from, so
 * the output is written over the input, from buf[pos] on, and never overtakes
 * what is still to be read. The run stops at the first frame this routine
 * does not handle (incomplete, control, fragment, error): new_pos is where
 * that frame starts, and the Python forwarder (frames.py) takes it from there
 * with all of RFC 6455's rules. buf[pos:out_end] holds the server frames.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static void
unmask_move(uint8_t *dst, const uint8_t *src, uint64_t n, const uint8_t key[4])
{
    uint64_t i = 0;
    uint32_t k32;
    memcpy(&k32, key, 4);
    uint64_t k64 = ((uint64_t)k32 << 32) | k32;
    /* dst <= src: a forward copy never reads a byte it has already written. */
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, src + i, 8);
        v ^= k64;
        memcpy(dst + i, &v, 8);
    }
    for (; i < n; i++) {
        dst[i] = src[i] ^ key[i & 3];
    }
}

static PyObject *
forward(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos, end;
    long long max_message;
    if (!PyArg_ParseTuple(args, "w*nnL", &view, &pos, &end, &max_message)) {
        return NULL;
    }
    if (pos < 0 || end > view.len || pos > end) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "pos/end outside the buffer");
        return NULL;
    }
    uint8_t *buf = (uint8_t *)view.buf;
    Py_ssize_t dst = pos;
    unsigned long long payload = 0;

    Py_BEGIN_ALLOW_THREADS
    while (end - pos >= 6) {
        uint8_t b0 = buf[pos], b1 = buf[pos + 1];
        uint8_t op = b0 & 0x0F;
        if ((b0 & 0xF0) != 0x80 || (op != 1 && op != 2) || !(b1 & 0x80)) {
            break; /* fragment, control, RSV bits or unmasked: Python decides */
        }
        uint64_t len = b1 & 0x7F;
        Py_ssize_t hlen = 6;
        if (len == 126) {
            if (end - pos < 8) break;
            len = ((uint64_t)buf[pos + 2] << 8) | buf[pos + 3];
            hlen = 8;
        } else if (len == 127) {
            if (end - pos < 14) break;
            len = 0;
            for (int i = 0; i < 8; i++) len = (len << 8) | buf[pos + 2 + i];
            if (len >> 63) break;
            hlen = 14;
        }
        if (max_message > 0 && len > (uint64_t)max_message) break;
        if ((uint64_t)(end - pos - hlen) < len) break; /* incomplete: streamed by Python */
        uint8_t key[4];
        memcpy(key, buf + pos + hlen - 4, 4);
        /* The server header: same first byte, no mask bit, no key. */
        buf[dst] = b0;
        if (len < 126) {
            buf[dst + 1] = (uint8_t)len;
            dst += 2;
        } else if (len < 65536) {
            buf[dst + 1] = 126;
            buf[dst + 2] = (uint8_t)(len >> 8);
            buf[dst + 3] = (uint8_t)len;
            dst += 4;
        } else {
            buf[dst + 1] = 127;
            for (int i = 0; i < 8; i++) buf[dst + 2 + i] = (uint8_t)(len >> (56 - 8 * i));
            dst += 10;
        }
        unmask_move(buf + dst, buf + pos + hlen, len, key);
        dst += (Py_ssize_t)len;
        pos += hlen + (Py_ssize_t)len;
        payload += len;
    }
    Py_END_ALLOW_THREADS

    PyBuffer_Release(&view);
    return Py_BuildValue("nnK", pos, dst, payload);
}

static PyMethodDef methods[] = {
    {"forward", forward, METH_VARARGS,
     "forward(buf, pos, end, max_message) -> (new_pos, out_end, payload_bytes)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "swsrs.wire._forward",
    "Re-frame runs of complete client data frames in place (the relay's fast path).",
    -1, methods,
};

PyMODINIT_FUNC
PyInit__forward(void)
{
    return PyModule_Create(&module);
}
