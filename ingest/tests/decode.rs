//! Decoding real files made by encoders capflow did not write (gst-launch x264enc, ffmpeg), and bad inputs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use capflow_ingest::{IngestError, PixelFormat, Resize, Source, SourceOptions, StreamInfo};

fn info() -> Arc<StreamInfo> {
    Arc::new(StreamInfo::new("s1", "p1", "forearm", 2.2))
}

fn gst_launch(args: &str) {
    let status = Command::new("gst-launch-1.0")
        .arg("-q")
        .args(args.split_whitespace())
        .status()
        .expect("gst-launch-1.0 is installed by `make setup`");
    assert!(status.success(), "gst-launch-1.0 {args}");
}

/// An H.264 MP4 of odd size (so RGB rows are padded to a 4-byte stride) made by GStreamer's own elements.
fn make_mp4(dir: &Path, frames: u32) -> PathBuf {
    let path = dir.join("clip.mp4");
    gst_launch(&format!(
        "videotestsrc num-buffers={frames} pattern=ball ! video/x-raw,width=161,height=121,framerate=25/1 \
         ! videoconvert ! x264enc ! h264parse ! mp4mux ! filesink location={}",
        path.display()
    ));
    path
}

fn read_all(
    location: &str,
    format: PixelFormat,
) -> Result<Vec<capflow_ingest::Frame>, IngestError> {
    let options = SourceOptions {
        format,
        ..Default::default()
    };
    let mut source = Source::open(location, info(), &options)?;
    let mut frames = Vec::new();
    while let Some(frame) = source.next_frame()? {
        frames.push(frame);
    }
    Ok(frames)
}

#[test]
fn decodes_every_frame_of_an_mp4_with_packed_rows_and_increasing_pts() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_mp4(dir.path(), 12);
    for format in [PixelFormat::Rgb8, PixelFormat::Gray8] {
        let frames = read_all(path.to_str().unwrap(), format).unwrap();
        assert_eq!(frames.len(), 12);
        for (i, frame) in frames.iter().enumerate() {
            assert_eq!(frame.index, i as u64);
            assert_eq!((frame.width, frame.height), (161, 121));
            assert_eq!(frame.data.len(), 161 * 121 * format.channels());
            assert_eq!(frame.stream.patient_id, "p1");
        }
        assert!(frames.windows(2).all(|w| w[1].pts_ns > w[0].pts_ns));
        assert_eq!(frames[1].pts_ns, 40_000_000);
    }
}

/// Every frame of `location` through a source that shrinks each side by 1.86 (as 1080p skin frames are).
fn read_shrunk(location: &str) -> Vec<capflow_ingest::Frame> {
    let options = SourceOptions {
        format: PixelFormat::Gray8,
        resize: Some(Resize::new(|w, h| {
            let shrink = |v: u32| (f64::from(v) / 1.86).round() as u32;
            (shrink(w), shrink(h))
        })),
        ..Default::default()
    };
    let mut source = Source::open(location, info(), &options).unwrap();
    let mut frames = Vec::new();
    while let Some(frame) = source.next_frame().unwrap() {
        frames.push(frame);
    }
    frames
}

#[test]
fn a_resizing_source_delivers_the_working_size_with_the_decoded_size_and_averaged_pixels() {
    let dir = tempfile::tempdir().unwrap();
    // A decoded video: the delivered size, the decoded size kept, the pixel size scaled.
    let path = make_mp4(dir.path(), 6);
    let halves = read_shrunk(path.to_str().unwrap());
    assert_eq!(halves.len(), 6);
    for half in &halves {
        assert_eq!((half.width, half.height), (87, 65));
        assert_eq!((half.source_width, half.source_height), (161, 121));
        assert_eq!(half.data.len(), 87 * 65);
        // The stream's pixel size describes the decoded frames; the delivered ones are coarser.
        assert!((half.um_per_px() - 2.2 * 161.0 / 87.0).abs() < 1e-12);
    }
    assert_eq!(
        read_all(path.to_str().unwrap(), PixelFormat::Gray8).unwrap()[0].um_per_px(),
        2.2
    );

    // A lossless one-pixel checkerboard (grey levels 76 and 150): a filter that averages every decoded pixel, as
    // the model's training resize does, gives their mean everywhere; one that skips pixels (nearest neighbour)
    // gives 76 or 150.
    let frames = dir.path().join("checkers");
    std::fs::create_dir(&frames).unwrap();
    gst_launch(&format!(
        "videotestsrc num-buffers=2 pattern=checkers-1 ! video/x-raw,width=160,height=120 ! videoconvert \
         ! pngenc ! multifilesink location={}/%06d.png",
        frames.display()
    ));
    let halves = read_shrunk(frames.to_str().unwrap());
    assert_eq!(halves.len(), 2);
    for half in &halves {
        assert_eq!((half.width, half.height), (86, 65));
        assert_eq!((half.source_width, half.source_height), (160, 120));
        let mean = (76.0 + 150.0) / 2.0;
        // Inside the border row and column, where every filter has all its taps.
        let worst = half
            .data
            .chunks_exact(86)
            .skip(1)
            .take(63)
            .flat_map(|row| &row[1..85])
            .map(|&v| (f64::from(v) - mean).abs())
            .fold(0.0, f64::max);
        assert!(
            worst <= 2.0,
            "a delivered pixel is {worst} grey levels off the mean of those it covers"
        );
    }
}

#[test]
fn decodes_a_file_uri_and_an_mjpeg_avi_from_ffmpeg() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_mp4(dir.path(), 5);
    let uri = format!("file://{}", path.display());
    assert_eq!(read_all(&uri, PixelFormat::Gray8).unwrap().len(), 5);

    let avi = dir.path().join("sdf.avi");
    let status = Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=25",
            "-frames:v",
            "7",
        ])
        .args(["-c:v", "mjpeg", "-pix_fmt", "yuvj420p"])
        .arg(&avi)
        .status()
        .expect("ffmpeg is installed by `make setup`");
    assert!(status.success());
    let frames = read_all(avi.to_str().unwrap(), PixelFormat::Rgb8).unwrap();
    assert_eq!(frames.len(), 7);
    assert_eq!((frames[0].width, frames[0].height), (64, 48));
}

#[test]
fn decodes_a_png_sequence_in_name_order_at_the_given_rate() {
    let dir = tempfile::tempdir().unwrap();
    gst_launch(&format!(
        "videotestsrc num-buffers=4 ! video/x-raw,width=32,height=24 ! videoconvert ! pngenc ! multifilesink location={}/%06d.png",
        dir.path().display()
    ));
    let options = SourceOptions {
        format: PixelFormat::Rgb8,
        queue_frames: 2,
        sequence_fps: 10.0,
        ..Default::default()
    };
    let mut source = Source::open(dir.path().to_str().unwrap(), info(), &options).unwrap();
    let mut pts = Vec::new();
    while let Some(frame) = source.next_frame().unwrap() {
        assert_eq!(frame.data.len(), 32 * 24 * 3);
        pts.push(frame.pts_ns);
    }
    assert_eq!(pts, [0, 100_000_000, 200_000_000, 300_000_000]);
}

#[test]
fn a_file_that_is_not_video_is_a_decode_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.mp4");
    std::fs::write(&path, "these are clinical notes, not a video\n".repeat(50)).unwrap();
    let err = read_all(path.to_str().unwrap(), PixelFormat::Rgb8).unwrap_err();
    assert!(matches!(err, IngestError::Decode { .. }), "{err:?}");
    assert!(err.to_string().contains("notes.mp4"), "{err}");
}

#[test]
fn a_truncated_mp4_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_mp4(dir.path(), 10);
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.mp4");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let err = read_all(cut.to_str().unwrap(), PixelFormat::Rgb8).unwrap_err();
    assert!(err.to_string().contains("cut.mp4"), "{err}");
}

#[test]
fn a_silent_stream_is_given_up_as_stalled_instead_of_blocking_forever() {
    // A UDP port nobody sends to: the pipeline starts and then never produces a frame, an end or an error, as a
    // damaged file sometimes leaves the demuxer, or a live sender that went quiet.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let uri = format!("udp://127.0.0.1:{port}");
    let options = SourceOptions {
        stall_timeout: std::time::Duration::from_millis(1500),
        ..Default::default()
    };
    let mut source = Source::open(&uri, info(), &options).expect("a UDP source starts");
    let start = std::time::Instant::now();
    let err = source.next_frame().unwrap_err();
    assert!(
        matches!(err, IngestError::Stalled { frames: 0, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&uri) && text.contains("stall_timeout_s"),
        "{text}"
    );
    assert!(start.elapsed() >= std::time::Duration::from_millis(1500));
    // The stream stays ended.
    assert!(source.next_frame().unwrap().is_none());
}

#[test]
fn a_replay_reader_delivers_every_frame_in_order_and_stops_even_when_blocked_on_a_full_queue() {
    use capflow_ingest::{EventKind, Popped, ReaderOptions, StreamReader};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let clip = make_mp4(dir.path(), 30);
    let options = ReaderOptions {
        queue_frames: 2,
        ..Default::default()
    };
    let info = StreamInfo::new("s1", "p1", "forearm", 2.2);

    // Read to the end: every frame, in order, never dropped; started and ended events.
    let mut reader =
        StreamReader::spawn(clip.to_str().unwrap(), info.clone(), options.clone()).unwrap();
    let mut indices = Vec::new();
    loop {
        match reader.pop_timeout(Duration::from_millis(200)) {
            Popped::Item(frame) => indices.push(frame.index),
            Popped::Empty => {}
            Popped::Closed => break,
        }
    }
    reader.join();
    assert_eq!(indices, (0..30).collect::<Vec<u64>>());
    assert_eq!(reader.dropped(), 0);
    let kinds: Vec<EventKind> = reader.take_events().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Started, EventKind::Ended]);

    // Never popped: the decoder blocks on the full queue; stop still ends the thread.
    let mut reader = StreamReader::spawn(clip.to_str().unwrap(), info, options).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    reader.stop();
    reader.join();
    let kinds: Vec<EventKind> = reader.take_events().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [EventKind::Started, EventKind::Stopped]);
}

#[test]
fn each_frame_reuses_the_buffer_of_a_frame_already_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let path = make_mp4(dir.path(), 12);
    let mut source =
        Source::open(path.to_str().unwrap(), info(), &SourceOptions::default()).unwrap();
    let mut addresses = std::collections::HashSet::new();
    let mut frames = 0;
    let mut previous: Option<Vec<u8>> = None;
    while let Some(frame) = source.next_frame().unwrap() {
        assert!(
            frame.data.pooled(),
            "frame {} belongs to the source's pool",
            frame.index
        );
        addresses.insert(frame.data.as_ptr() as usize);
        frames += 1;
        // The ball moves: a reused buffer holds the new frame's pixels, not the old ones.
        assert_ne!(previous.as_deref(), Some(&frame.data[..]));
        previous = Some(frame.data.to_vec());
        // `frame` is dropped here, before the next one is decoded.
    }
    assert_eq!(frames, 12);
    assert_eq!(
        addresses.len(),
        1,
        "every frame after the first is packed into the first one's buffer"
    );
}

/// A 256×32 grey ramp coded by ffmpeg in `pix_fmt` with `codec`, written to `path`; returns the luma plane of its
/// second frame as GStreamer's decoder delivers it (I420, before any conversion).
fn grey_ramp(path: &Path, pix_fmt: &str, codec: &[&str]) -> Vec<u8> {
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-f", "lavfi", "-i"])
        .arg(format!(
            "nullsrc=s=256x32:r=25,format={pix_fmt},geq=lum=X:cb=128:cr=128"
        ))
        .args(["-frames:v", "3"])
        .args(codec)
        .args(["-pix_fmt", pix_fmt])
        .arg(path)
        .status()
        .expect("ffmpeg is installed by `make setup`");
    assert!(status.success(), "ffmpeg {pix_fmt} {codec:?}");
    let raw = path.with_extension("i420");
    gst_launch(&format!(
        "filesrc location={} ! decodebin ! video/x-raw,format=I420 ! filesink location={}",
        path.display(),
        raw.display()
    ));
    let planes = std::fs::read(&raw).unwrap();
    let frame = 256 * 32 * 3 / 2;
    planes[frame..frame + 256 * 32].to_vec()
}

#[test]
fn grey_frames_hold_full_range_levels_whether_the_video_codes_limited_or_full_range_luma() {
    let dir = tempfile::tempdir().unwrap();
    // H.264 as cameras and encoders write it codes luma in 16–235; MJPEG (yuvj420p) in 0–255. GRAY8 frames must
    // read 0–255 either way, as the RGB decode does, for the model and the exposure scores: limited-range luma
    // stretched, full-range luma as coded.
    let h264 = dir.path().join("limited.mp4");
    let limited = grey_ramp(&h264, "yuv420p", &["-c:v", "libx264", "-crf", "1"]);
    let mjpeg = dir.path().join("full.avi");
    let full = grey_ramp(&mjpeg, "yuvj420p", &["-c:v", "mjpeg", "-q:v", "1"]);
    let stretch = |y: u8| {
        ((y as f64 - 16.0) * 255.0 / 219.0)
            .round()
            .clamp(0.0, 255.0) as u8
    };
    for (path, coded, full_range) in [(&h264, limited, false), (&mjpeg, full, true)] {
        let frames = read_all(path.to_str().unwrap(), PixelFormat::Gray8).unwrap();
        assert_eq!(frames.len(), 3);
        let want: Vec<u8> = if full_range {
            coded.clone()
        } else {
            coded.iter().map(|&y| stretch(y)).collect()
        };
        assert_eq!(frames[1].data[..], want[..], "{}", path.display());
        assert!(
            coded.iter().min() < Some(&20) && coded.iter().max() > Some(&230),
            "the ramp spans the levels: {coded:?}"
        );
    }
}
