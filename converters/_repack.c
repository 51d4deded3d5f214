/* MXFP4 repack from the Hugging Face layout to GGML's block_mxfp4, compiled (the numpy version in mxfp4.py is
 * the fallback where this module is not built).
 *
 * A Hugging Face block is 16 bytes: byte k holds element 2k in its low nibble and element 2k+1 in its high one.
 * GGML's block_mxfp4 is { uint8 e; uint8 qs[16]; } with element j in the low nibble of qs[j] and element j+16
 * in its high nibble, so qs[2k] and qs[2k+1] come from bytes k and k+8 of the Hugging Face block. The scale
 * byte (E8M0) is the same in both.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

static const uint64_t LOW = 0x0F0F0F0F0F0F0F0FULL;

/* Bytes 0..3 of x to the low byte of each 16-bit lane. */
static inline uint64_t spread(uint64_t x) {
    x = (x | (x << 16)) & 0x0000FFFF0000FFFFULL;
    return (x | (x << 8)) & 0x00FF00FF00FF00FFULL;
}

/* One block: 16 Hugging Face bytes and a scale into 17 GGML bytes (little-endian words). */
static inline void repack_block(const uint8_t *b, uint8_t e, uint8_t *o) {
    uint64_t lo, hi;
    memcpy(&lo, b, 8);
    memcpy(&hi, b + 8, 8);
    uint64_t even = (lo & LOW) | ((hi & LOW) << 4);         /* qs[2k]   */
    uint64_t odd = ((lo >> 4) & LOW) | (hi & ~LOW);         /* qs[2k+1] */
    uint64_t w0 = spread(even & 0xFFFFFFFFULL) | (spread(odd & 0xFFFFFFFFULL) << 8);
    uint64_t w1 = spread(even >> 32) | (spread(odd >> 32) << 8);
    o[0] = e;
    memcpy(o + 1, &w0, 8);
    memcpy(o + 9, &w1, 8);
}

static void repack_block_portable(const uint8_t *b, uint8_t e, uint8_t *o) {
    o[0] = e;
    for (int k = 0; k < 8; k++) {
        o[1 + 2 * k] = (uint8_t)((b[k] & 0x0F) | (b[k + 8] << 4));
        o[2 + 2 * k] = (uint8_t)((b[k] >> 4) | (b[k + 8] & 0xF0));
    }
}

static int little_endian(void) {
    const uint16_t one = 1;
    return *(const uint8_t *)&one == 1;
}

static PyObject *repack(PyObject *self, PyObject *args) {
    Py_buffer blocks, scales, out;
    Py_ssize_t nb, first, step;
    (void)self;
    if (!PyArg_ParseTuple(args, "y*y*w*nnn", &blocks, &scales, &out, &nb, &first, &step))
        return NULL;
    PyObject *result = NULL;
    Py_ssize_t rows_in = nb > 0 ? scales.len / nb : 0;
    Py_ssize_t rows_out = nb > 0 ? out.len / (17 * nb) : 0;
    if (nb <= 0 || step <= 0 || first < 0 || blocks.len != 16 * scales.len || scales.len != rows_in * nb
        || out.len != rows_out * 17 * nb || (rows_out > 0 && first + (rows_out - 1) * step >= rows_in)) {
        PyErr_SetString(PyExc_ValueError, "repack: buffer sizes do not match nb, first and step");
        goto done;
    }
    void (*one)(const uint8_t *, uint8_t, uint8_t *) = little_endian() ? repack_block : repack_block_portable;
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t r = 0; r < rows_out; r++) {
        Py_ssize_t src = first + r * step;
        const uint8_t *b = (const uint8_t *)blocks.buf + src * nb * 16;
        const uint8_t *s = (const uint8_t *)scales.buf + src * nb;
        uint8_t *o = (uint8_t *)out.buf + r * nb * 17;
        for (Py_ssize_t i = 0; i < nb; i++)
            one(b + 16 * i, s[i], o + 17 * i);
    }
    Py_END_ALLOW_THREADS
    result = Py_None;
    Py_INCREF(result);
done:
    PyBuffer_Release(&blocks);
    PyBuffer_Release(&scales);
    PyBuffer_Release(&out);
    return result;
}

static PyMethodDef methods[] = {
    {"repack", repack, METH_VARARGS,
     "repack(blocks, scales, out, nb, first, step): rows first, first+step, ... of HF MXFP4 [R, nb, 16] blocks and "
     "[R, nb] scales into out, GGML block_mxfp4 rows of nb * 17 bytes. Releases the GIL."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_repack", NULL, -1, methods};

PyMODINIT_FUNC PyInit__repack(void) { return PyModule_Create(&module); }
