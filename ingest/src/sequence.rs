//! Image sequences: a folder of same-type images played in name order.

use std::path::{Path, PathBuf};

use crate::IngestError;

/// Encoded image type of a sequence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ImageKind {
    Png,
    Jpeg,
}

impl ImageKind {
    fn of(path: &Path) -> Option<ImageKind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "png" => Some(ImageKind::Png),
            "jpg" | "jpeg" => Some(ImageKind::Jpeg),
            _ => None,
        }
    }

    pub(crate) fn caps_name(self) -> &'static str {
        match self {
            ImageKind::Png => "image/png",
            ImageKind::Jpeg => "image/jpeg",
        }
    }
}

/// Lists the images of a sequence folder sorted by file name; other files are ignored.
///
/// Name order is frame order, so zero-padded numbering (`000001.png`) is expected; mixing PNG and JPEG is an error
/// because one decoder serves the whole sequence.
pub fn list_images(dir: &Path) -> Result<Vec<PathBuf>, IngestError> {
    Ok(list_with_kind(dir)?.0)
}

pub(crate) fn list_with_kind(dir: &Path) -> Result<(Vec<PathBuf>, ImageKind), IngestError> {
    let entries = std::fs::read_dir(dir).map_err(|error| IngestError::Io {
        path: dir.to_owned(),
        error,
    })?;
    let mut images = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| IngestError::Io {
            path: dir.to_owned(),
            error,
        })?;
        let path = entry.path();
        if let Some(kind) = ImageKind::of(&path) {
            if path.is_file() {
                images.push((path, kind));
            }
        }
    }
    images.sort_by(|a, b| a.0.file_name().cmp(&b.0.file_name()));
    let Some(kind) = images.first().map(|(_, kind)| *kind) else {
        return Err(IngestError::EmptySequence {
            path: dir.to_owned(),
        });
    };
    if images.iter().any(|(_, k)| *k != kind) {
        return Err(IngestError::MixedSequence {
            path: dir.to_owned(),
        });
    }
    Ok((images.into_iter().map(|(p, _)| p).collect(), kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_images_in_name_order_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["000002.png", "000001.png", "notes.txt", "000010.PNG"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let names: Vec<_> = list_images(dir.path())
            .unwrap()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["000001.png", "000002.png", "000010.PNG"]);
    }

    #[test]
    fn empty_and_mixed_folders_are_errors_that_name_the_folder() {
        let dir = tempfile::tempdir().unwrap();
        let err = list_images(dir.path()).unwrap_err();
        assert!(matches!(err, IngestError::EmptySequence { .. }));
        assert!(err.to_string().contains(&dir.path().display().to_string()));
        std::fs::write(dir.path().join("a.png"), b"x").unwrap();
        std::fs::write(dir.path().join("b.jpg"), b"x").unwrap();
        assert!(matches!(
            list_images(dir.path()).unwrap_err(),
            IngestError::MixedSequence { .. }
        ));
    }
}
