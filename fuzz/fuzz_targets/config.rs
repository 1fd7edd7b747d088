//! Config parsing from arbitrary text, with environment overrides: never a
//! panic, and a config that parses is printed (`jetedge check --print`) as
//! TOML that parses to the same config.
#![no_main]

use jetedge::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A line `#ENV NAME=value` at the end stands for an override.
    let (text, env) = match text.rsplit_once("\n#ENV ") {
        Some((t, e)) => match e.split_once('=') {
            Some((k, v)) => (t, vec![(format!("JETEDGE_{k}"), v.to_string())]),
            None => (text, Vec::new()),
        },
        None => (text, Vec::new()),
    };
    let Ok(cfg) = Config::from_toml(text, env) else {
        return;
    };
    let printed = cfg.to_toml();
    let again = Config::from_toml(&printed, std::iter::empty())
        .unwrap_or_else(|p| panic!("printed config does not parse: {p:?}\n{printed}"));
    assert_eq!(cfg.sources, again.sources);
    assert_eq!(cfg.routes, again.routes);
});
