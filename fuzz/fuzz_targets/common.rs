//! Shared by the fuzz targets: turning raw input into a request.

/// Reads `name: value` lines up to the first empty line as request
/// headers (lines that are no valid header are skipped); the rest is the
/// body. With no empty line, everything is the body.
pub fn headers_and_body(data: &[u8]) -> (hyper::HeaderMap, &[u8]) {
    let mut headers = hyper::HeaderMap::new();
    let Some(end) = data.windows(2).position(|w| w == b"\n\n") else {
        return (headers, data);
    };
    for line in data[..end].split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = hyper::header::HeaderName::from_bytes(&line[..colon]);
        let value = hyper::header::HeaderValue::from_bytes(line[colon + 1..].trim_ascii());
        if let (Ok(name), Ok(value)) = (name, value) {
            headers.append(name, value);
        }
    }
    (headers, &data[end + 2..])
}
