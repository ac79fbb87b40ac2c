//! Model cards: any text is a valid card or an error naming the card, never a panic; a card that validates can
//! size a frame without panicking.
#![no_main]

use capflow_operators::model::ModelCard;
use capflow_operators::preprocess::{model_size, working_um_per_px};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match ModelCard::parse(text, "fuzz-card.toml") {
        Ok(card) => {
            for (w, h, um) in [(640, 480, 1.5), (1920, 1080, 2.2), (1, 1, 0.5)] {
                let _ = working_um_per_px(w, h, um, &card.input);
                let _ = model_size(w, h, um, &card.input);
            }
        }
        Err(e) => assert!(e.to_string().contains("fuzz-card.toml"), "{e}"),
    }
});
