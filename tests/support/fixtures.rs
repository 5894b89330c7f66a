//! Batches written on the fly: a CSV and real PNG/JPEG images, small and deterministic.

use std::path::{Path, PathBuf};

pub const HEADER: &str = "workflowDefinitionKey,customerInternalReference,frontImage,backImage,faceImage,userConsentUserIp,userConsentUserLocationCountry,userConsentUserLocationState,userConsentConsentObtained,userConsentConsentObtainedAt,preparedData.firstName,preparedData.lastName,preparedData.phoneNumber,preparedData.email,preparedData.dateOfBirth,preparedData.address.city";

/// Personal data used by fixtures; tests assert it never reaches a log line.
pub const PERSONAL: &[&str] = &["Zelda", "Quixwort", "zelda.quixwort@example.org", "+15031234567", "Smalltown"];

/// One valid data row for `HEADER`, images under `img/`.
pub fn row(i: usize) -> String {
    format!("10015,ref-{i:05},img/{i}.front.png,img/{i}.back.jpg,img/{i}.face.png,203.0.113.7,USA,IL,yes,2022-07-20T17:20:35.000Z,Zelda,Quixwort,+15031234567,zelda.quixwort@example.org,1990-01-31,Smalltown")
}

pub struct Batch {
    pub dir: PathBuf,
    _tmp: Option<tempfile::TempDir>,
}

impl Batch {
    /// An empty batch folder named `name` inside a fresh temp dir.
    pub fn new(name: &str) -> Batch {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(name);
        std::fs::create_dir(&dir).unwrap();
        Batch { dir, _tmp: Some(tmp) }
    }

    /// A batch folder at `dir` (created), owned by the caller.
    pub fn at(dir: &Path) -> Batch {
        std::fs::create_dir_all(dir).unwrap();
        Batch { dir: dir.to_path_buf(), _tmp: None }
    }

    /// A valid batch of `rows` rows with three small images each.
    pub fn valid(name: &str, rows: usize) -> Batch {
        Batch::new(name).with_rows(rows)
    }

    pub fn with_rows(self, rows: usize) -> Batch {
        self.with_tagged_rows(rows, "ref")
    }

    /// Rows whose customerInternalReference starts with `tag`: batches with other tags differ.
    pub fn with_tagged_rows(self, rows: usize, tag: &str) -> Batch {
        let mut csv = format!("{HEADER}\n");
        for i in 1..=rows {
            csv.push_str(&row(i).replacen("ref-", &format!("{tag}-"), 1));
            csv.push('\n');
            self.png(&format!("img/{i}.front.png"), 64 + i as u32 % 7, 40);
            self.jpeg(&format!("img/{i}.back.jpg"), 48, 32 + i as u16 % 5);
            self.png(&format!("img/{i}.face.png"), 32, 32);
        }
        self.csv(&csv)
    }

    pub fn csv(self, text: &str) -> Batch {
        self.file("input.csv", text.as_bytes())
    }

    pub fn file(self, rel: &str, bytes: &[u8]) -> Batch {
        write(&self.dir.join(rel), bytes);
        self
    }

    pub fn file_ref(&self, rel: &str, bytes: &[u8]) -> &Batch {
        write(&self.dir.join(rel), bytes);
        self
    }

    pub fn png(&self, rel: &str, width: u32, height: u32) -> &Batch {
        write(&self.dir.join(rel), &png(width, height));
        self
    }

    pub fn jpeg(&self, rel: &str, width: u16, height: u16) -> &Batch {
        write(&self.dir.join(rel), &jpeg(width, height));
        self
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, bytes).unwrap();
}

/// A real grey-gradient PNG.
pub fn png(width: u32, height: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, width, height);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    let data: Vec<u8> = (0..width * height).map(|i| (i % 251) as u8).collect();
    writer.write_image_data(&data).unwrap();
    writer.finish().unwrap();
    out
}

/// A real JPEG.
pub fn jpeg(width: u16, height: u16) -> Vec<u8> {
    let mut out = Vec::new();
    let data: Vec<u8> = (0..width as usize * height as usize * 3).map(|i| (i % 253) as u8).collect();
    jpeg_encoder::Encoder::new(&mut out, 80).encode(&data, width, height, jpeg_encoder::ColorType::Rgb).unwrap();
    out
}

/// A PNG header claiming `width` x `height` (no pixel data): enough for size checks.
pub fn png_header(width: u32, height: u32) -> Vec<u8> {
    let mut out = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    out.extend(width.to_be_bytes());
    out.extend(height.to_be_bytes());
    out.extend([8, 0, 0, 0, 0, 0, 0, 0, 0]);
    out
}

/// A JPEG header claiming `width` x `height` (start of image, then the frame header).
pub fn jpeg_header(width: u16, height: u16) -> Vec<u8> {
    let mut out = vec![0xFF, 0xD8, 0xFF, 0xC0, 0x00, 0x11, 0x08];
    out.extend(height.to_be_bytes());
    out.extend(width.to_be_bytes());
    out.extend([3, 1, 0x22, 0, 2, 0x11, 1, 3, 0x11, 1, 0xFF, 0xD9]);
    out
}

/// The JPEG with a full-size EXIF segment (as a large embedded thumbnail makes) after its start
/// marker: its dimensions then lie more than 64 KiB into the file.
pub fn jpeg_with_big_exif(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    out.extend([0xFF, 0xE1, 0xFF, 0xFF]);
    out.extend(b"Exif\0\0");
    out.extend(noise(0xFFFF - 2 - 6, 7));
    out.extend(&jpeg[2..]);
    out
}

/// Deterministic pseudo-random bytes (incompressible, like photos).
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
