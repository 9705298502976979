//! The CGI response parser: finding the end of the header section in the
//! guest's stdout as it arrives in writes of any size, and parsing the
//! header lines into a response head.
//!
//! Input: the first byte picks how the output is cut into writes; the rest
//! is what the guest writes to stdout.

#![no_main]

use http::{StatusCode, header};
use libfuzzer_sys::fuzz_target;
use wisp_host::fuzzing::{CGI_MAX_HEAD_BYTES, cgi_find_head_end, cgi_parse_head};

fuzz_target!(|data: &[u8]| {
    let Some((&cut, out)) = data.split_first() else {
        return;
    };

    let mut from = 0;
    let whole = cgi_find_head_end(out, &mut from);

    // The host scans again after each write, resuming where it stopped: the
    // same end, however the output was cut.
    let mut from = 0;
    let mut seen = 0;
    let mut size = usize::from(cut) % 64 + 1;
    let mut incremental = None;
    while seen < out.len() {
        seen = (seen + size).min(out.len());
        size = size * 7 % 61 + 1;
        let before = from;
        if let Some(end) = cgi_find_head_end(&out[..seen], &mut from) {
            incremental = Some(end);
            break;
        }
        assert!(before <= from && from <= seen);
    }
    assert_eq!(
        whole, incremental,
        "the scan depends on how the output was cut"
    );

    let block = match whole {
        Some((head_len, body_start)) => {
            // The blank line ends the head: `\n` or `\r\n`, at a line start,
            // and no blank line before it.
            assert!(matches!(&out[head_len..body_start], b"\n" | b"\r\n"));
            assert!(head_len == 0 || out[head_len - 1] == b'\n');
            let head = &out[..head_len];
            assert!(
                !head
                    .split(|&b| b == b'\n')
                    .rev()
                    .skip(1)
                    .any(|l| l.is_empty() || l == b"\r"),
                "a blank line before the end of the head"
            );
            head
        }
        // Output that ended without the blank line is parsed as a head too.
        None => out,
    };
    if block.len() > CGI_MAX_HEAD_BYTES {
        // The host refuses longer heads before parsing them.
        return;
    }
    let Ok((status, headers)) = cgi_parse_head(block) else {
        return;
    };
    // Hop-by-hop headers and the length never reach the client: the host
    // frames the body itself.
    for name in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
        header::UPGRADE,
        header::HeaderName::from_static("keep-alive"),
    ] {
        assert!(!headers.contains_key(&name), "{name} passed through");
    }
    let says_status = block
        .split(|&b| b == b'\n')
        .any(|l| l.len() >= 7 && l[..7].eq_ignore_ascii_case(b"status:"));
    if !says_status && headers.contains_key(header::LOCATION) {
        assert_eq!(status, StatusCode::FOUND);
    }
    if !headers.contains_key(header::LOCATION)
        && status != StatusCode::NO_CONTENT
        && status != StatusCode::NOT_MODIFIED
    {
        assert!(headers.contains_key(header::CONTENT_TYPE));
    }
});
