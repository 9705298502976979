// A Wisp function in C: a plain wasm32-wasi (preview 1) program built with
// clang, lld and wasi-libc, run CGI-style. The request arrives in
// environment variables and on stdin; the response goes to stdout as CGI
// headers, a blank line and the body. This one answers a small HTML page.
//
// Build and deploy it (from the workspace root, with `wisp serve` running):
//
//   examples/cgi-c/build.sh            # -> target/wasm/cgi-c/cgi-c.wasm
//   wisp deploy cgi-c target/wasm/cgi-c/cgi-c.wasm --route '/cgi-c/*'
//   curl 'http://127.0.0.1:8080/cgi-c/page?name=wasm'
//
// The build needs Debian's clang, lld, wasi-libc and libclang-rt-dev-wasm32
// (scripts/common.sh installs them when missing).

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *var(const char *name) {
    const char *v = getenv(name);
    return v ? v : "";
}

/* Writes s with HTML's special characters escaped. */
static void html(const char *s) {
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", stdout); break;
        case '>': fputs("&gt;", stdout); break;
        case '&': fputs("&amp;", stdout); break;
        case '"': fputs("&quot;", stdout); break;
        default: putchar(*s);
        }
    }
}

int main(void) {
    /* Count the body (stdin) without keeping it. */
    unsigned long body = 0;
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        body += n;
    }

    if (strcmp(var("PATH_INFO"), "/missing") == 0) {
        fputs("Status: 404 Not Found\r\nContent-Type: text/html; charset=utf-8\r\n\r\n"
              "<!doctype html><title>Not found</title><h1>Not found</h1>\n",
              stdout);
        return 0;
    }

    fputs("Content-Type: text/html; charset=utf-8\r\n"
          "X-Powered-By: wasi-libc\r\n"
          "\r\n",
          stdout);
    fputs("<!doctype html>\n<html><head><title>Hello from C</title></head>\n<body>\n", stdout);
    fputs("<h1>Hello from C on Wisp</h1>\n<ul>\n", stdout);
    fputs("<li>method: <code>", stdout); html(var("REQUEST_METHOD")); fputs("</code></li>\n", stdout);
    fputs("<li>script: <code>", stdout); html(var("SCRIPT_NAME")); fputs("</code></li>\n", stdout);
    fputs("<li>path: <code>", stdout); html(var("PATH_INFO")); fputs("</code></li>\n", stdout);
    fputs("<li>query: <code>", stdout); html(var("QUERY_STRING")); fputs("</code></li>\n", stdout);
    fputs("<li>user agent: <code>", stdout); html(var("HTTP_USER_AGENT")); fputs("</code></li>\n", stdout);
    printf("<li>body: %lu bytes</li>\n", body);
    fputs("</ul>\n</body></html>\n", stdout);
    return 0;
}
