//! Study manifests (CSV): any bytes give streams or an error naming the file, never a panic; the streams then go
//! through the config's validation like a real manifest's.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("/study/manifest.csv");
    match capflow::config::parse_manifest_csv(data, path) {
        Ok(streams) => {
            assert!(!streams.is_empty(), "a manifest without rows is an error");
            let mut config = capflow::config::Config {
                streams,
                ..Default::default()
            };
            config.apply_profiles();
            let _ = config.problems();
            let _ = config.fingerprint();
        }
        Err(e) => assert!(e.contains("manifest.csv"), "the error names the file: {e}"),
    }
});
