//! The run config: any text through the parser, validation, profiles and fingerprint must give a config or an
//! error, never a panic; what `capflow check` prints for a parsed config must parse back.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(mut config) = capflow::config::parse(text, "fuzz.toml") else {
        return;
    };
    config.resolve_paths(std::path::Path::new("/study"));
    config.apply_profiles();
    let _ = config.problems();
    let _ = config.fingerprint();
    for stream in &config.streams {
        let _ = (stream.is_live(), stream.recorded_at_ms());
    }
    if let Ok(printed) = toml::to_string_pretty(&config) {
        if let Err(e) = capflow::config::parse(&printed, "printed.toml") {
            panic!("`capflow check` output does not parse back: {e}\n{printed}");
        }
    }
});
