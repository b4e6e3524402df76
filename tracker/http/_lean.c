/* The pixel hot path's two parsers in C, a request head (front.parse_head) and a query string
 * (query._split), for the common case only; and its answer writer (front.render). Each returns
 * NotImplemented for anything it does not read itself (a byte outside ASCII, a head over the
 * line limit): the Python function, the reference, then reads it. What either returns otherwise
 * is what the Python one returns for the same input; tests/unit/test_lean_differential.py checks
 * that on generated input, and the whole suite runs with this module in place.
 *
 * Every rule set (header names, paths, methods, versions, parameter names, limits) comes from the
 * Python modules through configure_head() and the arguments: only the grammar is written here.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#define MAX_LINES 512 /* line ends parse_head keeps; max_headers + 1 must be below */

static PyObject *specials;  /* front._SPECIAL: lowercase name -> what _fields does with it */
static PyObject *joiners;   /* front._JOINERS: name -> separator of its joined lines */
static PyObject *paths, *methods, *versions;  /* frozensets of str */
static PyObject *head_type; /* front.Head (a NamedTuple) */
static PyObject *http10_str;
static Py_ssize_t max_headers, max_line;
static long code_hand_off, code_length, code_connection, code_host, code_joined, code_single;
static unsigned char token_char[256];
static int configured;

static PyObject *problem_repeated, *problem_encoding, *problem_too_long, *problem_value;

static PyObject *
configure_head(PyObject *self, PyObject *args)
{
    PyObject *sp, *jo, *pa, *me, *ve, *ht, *tokens;
    Py_ssize_t mh, ml;
    long ho, le, co, hs, jn, si;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!OUnn(llllll)", &PyDict_Type, &sp, &PyDict_Type, &jo,
                          &PyFrozenSet_Type, &pa, &PyFrozenSet_Type, &me, &PyFrozenSet_Type, &ve,
                          &ht, &tokens, &mh, &ml, &ho, &le, &co, &hs, &jn, &si))
        return NULL;
    if (!PyUnicode_IS_ASCII(tokens)) {
        PyErr_SetString(PyExc_ValueError, "token characters must be ASCII");
        return NULL;
    }
    if (!PyType_Check(ht) || !PyType_IsSubtype((PyTypeObject *)ht, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "the head type must be a tuple subclass");
        return NULL;
    }
    if (mh < 0 || mh + 1 >= MAX_LINES || ml < 0) {
        PyErr_SetString(PyExc_ValueError, "max_headers is over what the C parser keeps");
        return NULL;
    }
    Py_XSETREF(specials, Py_NewRef(sp));
    Py_XSETREF(joiners, Py_NewRef(jo));
    Py_XSETREF(paths, Py_NewRef(pa));
    Py_XSETREF(methods, Py_NewRef(me));
    Py_XSETREF(versions, Py_NewRef(ve));
    Py_XSETREF(head_type, Py_NewRef(ht));
    memset(token_char, 0, sizeof token_char);
    const Py_UCS1 *t = PyUnicode_1BYTE_DATA(tokens);
    for (Py_ssize_t i = 0; i < PyUnicode_GET_LENGTH(tokens); i++)
        token_char[t[i]] = 1;
    max_headers = mh;
    max_line = ml;
    code_hand_off = ho, code_length = le, code_connection = co;
    code_host = hs, code_joined = jn, code_single = si;
    configured = 1;
    Py_RETURN_NONE;
}

static PyObject *
ascii_str(const char *p, Py_ssize_t n)
{
    return PyUnicode_DecodeASCII(p, n, "strict");
}

/* Is [p, p+n) one of the strings in the frozenset? -1 on error. */
static int
in_set(PyObject *set, const char *p, Py_ssize_t n)
{
    PyObject *s = ascii_str(p, n);
    if (s == NULL)
        return -1;
    int found = PySet_Contains(set, s);
    Py_DECREF(s);
    return found;
}

static int
equals_lower(const char *p, Py_ssize_t n, const char *word)
{
    Py_ssize_t len = (Py_ssize_t)strlen(word);
    if (n != len)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = p[i];
        if (c >= 'A' && c <= 'Z')
            c = (char)(c - 'A' + 'a');
        if (c != word[i])
            return 0;
    }
    return 1;
}

/* Connection's comma-separated tokens, blanks stripped, compared without case. */
static void
connection_tokens(const char *p, Py_ssize_t n, int *close, int *keep_alive)
{
    Py_ssize_t start = 0;
    for (Py_ssize_t i = 0; i <= n; i++) {
        if (i < n && p[i] != ',')
            continue;
        Py_ssize_t a = start, b = i;
        while (a < b && (p[a] == ' ' || p[a] == '\t'))
            a++;
        while (b > a && (p[b - 1] == ' ' || p[b - 1] == '\t'))
            b--;
        if (equals_lower(p + a, b - a, "close"))
            *close = 1;
        else if (equals_lower(p + a, b - a, "keep-alive"))
            *keep_alive = 1;
        start = i + 1;
    }
}

#define DEFER Py_NewRef(Py_NotImplemented)

/* One header line [p, p+n) into headers (see front._fields). 1 to go on, 0 to refuse the head
 * (parse_head's None), -1 on error. */
static int
header_line(PyObject *headers, const char *p, Py_ssize_t n, int *hosts, int *close,
            int *keep_alive)
{
    const char *colon = memchr(p, ':', (size_t)n);
    if (colon == NULL || colon == p)
        return 0;
    Py_ssize_t name_len = colon - p;
    char lower[256];
    char *key_buf = name_len <= (Py_ssize_t)sizeof lower ? lower : PyMem_Malloc((size_t)name_len);
    if (key_buf == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int result = 0;
    PyObject *key = NULL, *value = NULL;
    for (Py_ssize_t i = 0; i < name_len; i++) {
        unsigned char c = (unsigned char)p[i];
        if (!token_char[c])
            goto done;  /* whitespace before the colon, a folded line, not a token */
        key_buf[i] = (char)(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
    }
    const char *v = colon + 1, *end = p + n;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    key = ascii_str(key_buf, name_len);
    if (key == NULL)
        goto error;
    PyObject *special = PyDict_GetItemWithError(specials, key);  /* borrowed */
    if (special == NULL && PyErr_Occurred())
        goto error;
    if (special != NULL) {
        long code = PyLong_AsLong(special);
        if (code == -1 && PyErr_Occurred())
            goto error;
        if (code == code_hand_off)
            goto done;
        if (code == code_length || code == code_single) {
            int there = PyDict_Contains(headers, key);
            if (there < 0)
                goto error;
            if (there || (code == code_length && !(end - v == 1 && *v == '0')))
                goto done;  /* a body, or a name aiohttp refuses twice */
        }
        else if (code == code_connection) {
            connection_tokens(v, end - v, close, keep_alive);
        }
        else if (code == code_host) {
            (*hosts)++;
        }
        else if (code == code_joined) {
            PyObject *old = PyDict_GetItemWithError(headers, key);  /* borrowed */
            if (old == NULL && PyErr_Occurred())
                goto error;
            if (old != NULL) {
                PyObject *joiner = PyDict_GetItemWithError(joiners, key);
                if (joiner == NULL) {
                    if (!PyErr_Occurred())
                        PyErr_SetString(PyExc_KeyError, "a joined header without its joiner");
                    goto error;
                }
                PyObject *tail = ascii_str(v, end - v);
                if (tail == NULL)
                    goto error;
                PyObject *head = PyUnicode_Concat(old, joiner);
                if (head != NULL)
                    value = PyUnicode_Concat(head, tail);
                Py_XDECREF(head);
                Py_DECREF(tail);
                if (value == NULL || PyDict_SetItem(headers, key, value) < 0)
                    goto error;
                result = 1;
                goto done;
            }
        }
    }
    int there = PyDict_Contains(headers, key);
    if (there < 0)
        goto error;
    if (!there) {
        value = ascii_str(v, end - v);
        if (value == NULL || PyDict_SetItem(headers, key, value) < 0)
            goto error;
    }
    result = 1;
    goto done;
error:
    result = -1;
done:
    Py_XDECREF(key);
    Py_XDECREF(value);
    if (key_buf != lower)
        PyMem_Free(key_buf);
    return result;
}

static PyObject *
parse_head(PyObject *self, PyObject *arg)
{
    if (!configured) {
        PyErr_SetString(PyExc_RuntimeError, "configure_head() first");
        return NULL;
    }
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "parse_head() takes bytes");
        return NULL;
    }
    const char *p = PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    if (n > max_line)
        return DEFER;  /* a line may be too long: the Python parser measures */
    /* One pass: ASCII only (else the Python parser), no control character but CRLF pairs;
     * where each line ends. */
    Py_ssize_t ends[MAX_LINES + 1];
    Py_ssize_t lines = 0;
    int refuse = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c >= 0x80)
            return DEFER;
        if ((c < 0x20 || c == 0x7f) && !refuse) {
            if (c == '\r' && i + 1 < n && p[i + 1] == '\n') {
                if (lines < MAX_LINES)
                    ends[lines] = i;
                lines++;
                i++;
            }
            else {
                refuse = 1;  /* None, unless a later byte sends it to the Python parser */
            }
        }
    }
    if (refuse || lines + 1 > max_headers + 1 || lines >= MAX_LINES)
        Py_RETURN_NONE;
    ends[lines++] = n;
    Py_ssize_t first = ends[0];
    /* the request line: exactly three parts separated by single spaces */
    const char *sp1 = memchr(p, ' ', (size_t)first);
    if (sp1 == NULL)
        Py_RETURN_NONE;
    const char *sp2 = memchr(sp1 + 1, ' ', (size_t)(p + first - sp1 - 1));
    if (sp2 == NULL || memchr(sp2 + 1, ' ', (size_t)(p + first - sp2 - 1)) != NULL)
        Py_RETURN_NONE;
    const char *target = sp1 + 1, *version = sp2 + 1;
    Py_ssize_t target_len = sp2 - target, version_len = p + first - version;
    const char *question = memchr(target, '?', (size_t)target_len);
    Py_ssize_t path_len = question ? question - target : target_len;
    /* method and path are made once: checked against the rule sets, then kept in the Head */
    PyObject *method = NULL, *path = NULL, *query = NULL, *headers = NULL, *head = NULL;
    PyObject *fields = NULL, *args = NULL;
    int ok;
    if ((path = ascii_str(target, path_len)) == NULL || (ok = PySet_Contains(paths, path)) < 0)
        goto done;
    if (!ok)
        goto refuse;
    if ((method = ascii_str(p, sp1 - p)) == NULL || (ok = PySet_Contains(methods, method)) < 0)
        goto done;
    if (!ok)
        goto refuse;
    if ((ok = in_set(versions, version, version_len)) < 0)
        goto done;
    if (!ok || memchr(target, '#', (size_t)target_len) != NULL)
        goto refuse;
    if ((headers = PyDict_New()) == NULL)
        goto done;
    int hosts = 0, close = 0, keep_alive = 0;
    for (Py_ssize_t line = 1; line < lines; line++) {
        Py_ssize_t at = ends[line - 1] + 2;
        int r = header_line(headers, p + at, ends[line] - at, &hosts, &close, &keep_alive);
        if (r < 0)
            goto done;
        if (r == 0)
            goto refuse;
    }
    int http10 = version_len == 8 && memcmp(version, "HTTP/1.0", 8) == 0;
    if (hosts > 1 || (!http10 && hosts != 1) || (http10 && close && keep_alive))
        goto refuse;
    int alive = http10 ? keep_alive : !close;
    query = question ? ascii_str(question + 1, target + target_len - question - 1)
                     : PyUnicode_New(0, 0);
    if (query == NULL)
        goto done;
    fields = PyTuple_Pack(6, method, path, query, http10 ? Py_True : Py_False,
                          alive ? Py_True : Py_False, headers);
    if (fields != NULL)
        args = PyTuple_Pack(1, fields);
    if (args != NULL)  /* tuple.__new__(Head, fields), as Head._make does */
        head = PyTuple_Type.tp_new((PyTypeObject *)head_type, args, NULL);
    goto done;
refuse:  /* parse_head_py's None: the head goes to aiohttp */
    head = Py_NewRef(Py_None);
done:
    Py_XDECREF(method);
    Py_XDECREF(path);
    Py_XDECREF(query);
    Py_XDECREF(headers);
    Py_XDECREF(fields);
    Py_XDECREF(args);
    return head;
}

static int
hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* query._decode of an ASCII [p, p+n): form-decoded and read as UTF-8. NULL with no error set
 * when it is not valid UTF-8; *control is set when the result holds a C0 control or DEL. */
static PyObject *
form_decode(const char *p, Py_ssize_t n, int *control)
{
    *control = 0;
    if (memchr(p, '%', (size_t)n) == NULL && memchr(p, '+', (size_t)n) == NULL) {
        for (Py_ssize_t i = 0; i < n; i++)
            if ((unsigned char)p[i] < 0x20 || p[i] == 0x7f)
                *control = 1;
        return ascii_str(p, n);
    }
    char small[512];
    char *buf = n <= (Py_ssize_t)sizeof small ? small : PyMem_Malloc((size_t)n);
    if (buf == NULL)
        return PyErr_NoMemory();
    Py_ssize_t out = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        char c = p[i];
        int hi, lo;
        if (c == '+') {
            c = ' ';
        }
        else if (c == '%' && i + 2 < n &&
                 (hi = hex_value(p[i + 1])) >= 0 && (lo = hex_value(p[i + 2])) >= 0) {
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if ((unsigned char)c < 0x20 || c == 0x7f)
            *control = 1;
        buf[out++] = c;
    }
    PyObject *value = PyUnicode_DecodeUTF8(buf, out, "strict");
    if (buf != small)
        PyMem_Free(buf);
    if (value == NULL && PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
        PyErr_Clear();
    return value;
}

/* query._split(raw, known) with the limits passed in: (values, [(name, problem), ...]). */
static PyObject *
split_query(PyObject *self, PyObject *args)
{
    PyObject *raw, *known, *limits;
    Py_ssize_t default_limit;
    if (!PyArg_ParseTuple(args, "UO!O!n", &raw, &PyFrozenSet_Type, &known, &PyDict_Type, &limits,
                          &default_limit))
        return NULL;
    if (!PyUnicode_IS_ASCII(raw))
        return DEFER;
    const char *p = (const char *)PyUnicode_1BYTE_DATA(raw);
    Py_ssize_t n = PyUnicode_GET_LENGTH(raw);
    PyObject *values = PyDict_New(), *problems = PyList_New(0);
    PyObject *name = NULL, *value = NULL, *problem = NULL;
    if (values == NULL || problems == NULL)
        goto error;
    Py_ssize_t start = 0;
    while (start <= n) {
        const char *amp = memchr(p + start, '&', (size_t)(n - start));
        Py_ssize_t stop = amp ? amp - p : n;
        if (stop > start) {
            const char *part = p + start;
            Py_ssize_t len = stop - start;
            const char *eq = memchr(part, '=', (size_t)len);
            Py_ssize_t name_len = eq ? eq - part : len;
            int control;
            name = ascii_str(part, name_len);
            if (name == NULL)
                goto error;
            int is_known = PySet_Contains(known, name);
            if (is_known < 0)
                goto error;
            if (!is_known) {  /* a name written with escapes: the decoded one may be known */
                Py_CLEAR(name);
                if (memchr(part, '%', (size_t)name_len) || memchr(part, '+', (size_t)name_len)) {
                    name = form_decode(part, name_len, &control);
                    if (name == NULL && PyErr_Occurred())
                        goto error;
                    if (name != NULL && (is_known = PySet_Contains(known, name)) < 0)
                        goto error;
                }
                if (name == NULL || !is_known) {
                    Py_CLEAR(name);
                    goto next;
                }
            }
            int seen = PyDict_Contains(values, name);
            if (seen < 0)
                goto error;
            if (seen) {
                problem = PyTuple_Pack(2, name, problem_repeated);
            }
            else {
                const char *v = eq ? eq + 1 : part + len;
                value = form_decode(v, part + len - v, &control);
                if (value == NULL && PyErr_Occurred())
                    goto error;
                Py_ssize_t limit = default_limit;
                PyObject *given = PyDict_GetItemWithError(limits, name);  /* borrowed */
                if (given == NULL && PyErr_Occurred())
                    goto error;
                if (given != NULL && (limit = PyLong_AsSsize_t(given)) == -1 && PyErr_Occurred())
                    goto error;
                if (value == NULL)
                    problem = PyTuple_Pack(2, name, problem_encoding);
                else if (PyUnicode_GET_LENGTH(value) > limit)
                    problem = PyTuple_Pack(2, name, problem_too_long);
                else if (control)
                    problem = PyTuple_Pack(2, name, problem_value);
                else if (PyDict_SetItem(values, name, value) < 0)
                    goto error;
                Py_CLEAR(value);
            }
            if (problem != NULL) {
                if (PyList_Append(problems, problem) < 0)
                    goto error;
                Py_CLEAR(problem);
            }
            else if (PyErr_Occurred()) {
                goto error;
            }
            Py_CLEAR(name);
        }
    next:
        if (amp == NULL)
            break;
        start = stop + 1;
    }
    PyObject *result = PyTuple_Pack(2, values, problems);
    Py_DECREF(values);
    Py_DECREF(problems);
    return result;
error:
    Py_XDECREF(values);
    Py_XDECREF(problems);
    Py_XDECREF(name);
    Py_XDECREF(value);
    Py_XDECREF(problem);
    return NULL;
}

/* front.render's bytes: the status line, "name: value" per header, Content-Length, Date, the
 * server line, the connection line ("" for none), the blank line, then the body unless this
 * answers a HEAD. Strings are written as UTF-8, as str.encode() does. */
static PyObject *
render(PyObject *self, PyObject *args)
{
    PyObject *status_line, *headers, *server_line, *date, *connection, *body;
    int head_only;
    if (!PyArg_ParseTuple(args, "UO!UUUSp", &status_line, &PyList_Type, &headers, &server_line,
                          &date, &connection, &body, &head_only))
        return NULL;
    Py_ssize_t n_headers = PyList_GET_SIZE(headers);
    if (n_headers > 64)
        return DEFER;  /* front.render_py writes it */
    const char *name_at[64], *value_at[64];
    Py_ssize_t name_len[64], value_len[64];
    Py_ssize_t status_len, server_len, date_len, connection_len;
    const char *status_p = PyUnicode_AsUTF8AndSize(status_line, &status_len);
    const char *server_p = PyUnicode_AsUTF8AndSize(server_line, &server_len);
    const char *date_p = PyUnicode_AsUTF8AndSize(date, &date_len);
    const char *connection_p = PyUnicode_AsUTF8AndSize(connection, &connection_len);
    if (!status_p || !server_p || !date_p || !connection_p)
        return NULL;
    Py_ssize_t body_len = PyBytes_GET_SIZE(body);
    char length[32];
    int length_len = snprintf(length, sizeof length, "Content-Length: %zd\r\n", body_len);
    if (length_len < 0 || length_len >= (int)sizeof length)
        return DEFER;  /* a body of 10^13 bytes: never a pixel's */
    Py_ssize_t total = status_len + length_len + 6 + date_len + 2 + server_len + connection_len + 2;
    for (Py_ssize_t i = 0; i < n_headers; i++) {
        PyObject *pair = PyList_GET_ITEM(headers, i);
        if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2 ||
            !PyUnicode_Check(PyTuple_GET_ITEM(pair, 0)) ||
            !PyUnicode_Check(PyTuple_GET_ITEM(pair, 1))) {
            PyErr_SetString(PyExc_TypeError, "headers must be (name, value) pairs of str");
            return NULL;
        }
        name_at[i] = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 0), &name_len[i]);
        value_at[i] = PyUnicode_AsUTF8AndSize(PyTuple_GET_ITEM(pair, 1), &value_len[i]);
        if (!name_at[i] || !value_at[i])
            return NULL;
        total += name_len[i] + 2 + value_len[i] + 2;
    }
    if (!head_only)
        total += body_len;
    PyObject *out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        return NULL;
    char *w = PyBytes_AS_STRING(out);
#define PUT(p, n) (memcpy(w, (p), (size_t)(n)), w += (n))
    PUT(status_p, status_len);
    for (Py_ssize_t i = 0; i < n_headers; i++) {
        PUT(name_at[i], name_len[i]);
        PUT(": ", 2);
        PUT(value_at[i], value_len[i]);
        PUT("\r\n", 2);
    }
    PUT(length, length_len);
    PUT("Date: ", 6);
    PUT(date_p, date_len);
    PUT("\r\n", 2);
    PUT(server_p, server_len);
    PUT(connection_p, connection_len);
    PUT("\r\n", 2);
    if (!head_only)
        PUT(PyBytes_AS_STRING(body), body_len);
#undef PUT
    if (w != PyBytes_AS_STRING(out) + total) {  /* the sizes above and the writes disagree */
        Py_DECREF(out);
        PyErr_SetString(PyExc_SystemError, "render() wrote another length than it sized");
        return NULL;
    }
    return out;
}

static PyMethodDef methods_def[] = {
    {"render", render, METH_VARARGS, "front.render's bytes."},
    {"configure_head", configure_head, METH_VARARGS, "Set parse_head's rule sets (front.py)."},
    {"parse_head", parse_head, METH_O, "front.parse_head, or NotImplemented."},
    {"split_query", split_query, METH_VARARGS, "query._split, or NotImplemented."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_lean", "The pixel path's parsers in C (see _lean.c).", -1,
    methods_def,
};

PyMODINIT_FUNC
PyInit__lean(void)
{
    problem_repeated = PyUnicode_InternFromString("repeated");
    problem_encoding = PyUnicode_InternFromString("invalid_encoding");
    problem_too_long = PyUnicode_InternFromString("too_long");
    problem_value = PyUnicode_InternFromString("invalid_value");
    if (!problem_repeated || !problem_encoding || !problem_too_long || !problem_value)
        return NULL;
    return PyModule_Create(&module_def);
}
