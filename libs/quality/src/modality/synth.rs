//! Deterministic synthetic images and texts with planted issues: the committed fixtures
//! (`fixtures/modality`, written by the `modality-fixtures` binary), the precision/recall tests
//! and the benchmark. Every value comes from a seeded SplitMix64, so a seed always gives the same
//! data.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{DynamicImage, GrayImage, ImageFormat, Rgb, RgbImage};

use crate::detectors::SplitMix64;

/// One generated image: where it goes in a folder-per-class archive, its encoded bytes, and the
/// issue types planted in it (`not_analyzed` for a file that is no image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlantedImage {
    /// `class/name.ext`.
    pub path: String,
    /// The encoded file.
    pub bytes: Vec<u8>,
    /// Planted issue type names.
    pub planted: Vec<&'static str>,
}

/// One generated text and the issue types planted in it (`PII:<type>` names a PII kind).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlantedText {
    /// The text.
    pub text: String,
    /// Planted issue type names (`empty_text`, `text_length`, `PII`, `non_english`,
    /// `near_duplicate`).
    pub planted: Vec<&'static str>,
    /// The planted PII kinds (`email`, `credit_card`, ...).
    pub pii_types: Vec<&'static str>,
}

fn unit(rng: &mut SplitMix64) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

fn range(rng: &mut SplitMix64, lo: u32, hi: u32) -> u32 {
    lo + rng.below((hi - lo + 1) as usize) as u32
}

fn colour(rng: &mut SplitMix64, lo: u32, hi: u32) -> [f64; 3] {
    std::array::from_fn(|_| f64::from(range(rng, lo, hi)))
}

/// A rectangle or ellipse (in unit coordinates) filled with a horizontal gradient.
struct Shape {
    ellipse: bool,
    centre: (f64, f64),
    radii: (f64, f64),
    from: [f64; 3],
    to: [f64; 3],
}

/// A textured, colourful picture: a gradient, a few rectangles and ellipses, per-channel noise;
/// channel values are drawn from `[lo, hi]` before noise.
fn picture(rng: &mut SplitMix64, w: u32, h: u32, lo: u32, hi: u32, noise: f64) -> RgbImage {
    let (a, b) = (colour(rng, lo, hi), colour(rng, lo, hi));
    let angle = unit(rng) * std::f64::consts::TAU;
    let (dx, dy) = (angle.cos(), angle.sin());
    // Many small hard-edged shapes, detail that survives a resize as a photo's edges do, each
    // filled with its own gradient, so histograms spread like a photo's.
    let shapes: Vec<Shape> = (0..24)
        .map(|_| {
            let centre = (unit(rng), unit(rng));
            let radii = (0.04 + 0.16 * unit(rng), 0.04 + 0.16 * unit(rng));
            let ellipse = rng.below(2) == 0;
            let from = colour(rng, lo, hi);
            Shape {
                ellipse,
                centre,
                radii,
                from,
                to: colour(rng, lo, hi),
            }
        })
        .collect();
    // Texture: noise on a 32 × 32 grid stretched over the image, so it survives downscaling (the
    // checks' to 64 pixels a side, a resized copy's) as a photo's detail does, and finer noise.
    let grain: Vec<f64> = (0..32 * 32 * 3)
        .map(|_| noise * (2.0 * unit(rng) - 1.0))
        .collect();
    let mut img = RgbImage::new(w, h);
    for (x, y, p) in img.enumerate_pixels_mut() {
        let cell = ((y * 32 / h) * 32 + x * 32 / w) as usize * 3;
        let (u, v) = (
            (f64::from(x) + 0.5) / f64::from(w),
            (f64::from(y) + 0.5) / f64::from(h),
        );
        let t = ((u - 0.5) * dx + (v - 0.5) * dy + 0.71) / 1.42;
        let mut c: [f64; 3] = std::array::from_fn(|i| a[i] + (b[i] - a[i]) * t);
        for shape in &shapes {
            let (ex, ey) = (
                (u - shape.centre.0) / shape.radii.0,
                (v - shape.centre.1) / shape.radii.1,
            );
            let inside = if shape.ellipse {
                ex * ex + ey * ey <= 1.0
            } else {
                ex.abs() <= 1.0 && ey.abs() <= 1.0
            };
            if inside {
                let t = (ex + 1.0) / 2.0;
                c = std::array::from_fn(|i| shape.from[i] + (shape.to[i] - shape.from[i]) * t);
            }
        }
        *p = Rgb(std::array::from_fn(|i| {
            let fine = 0.5 * noise * (2.0 * unit(rng) - 1.0);
            (c[i] + grain[cell + i] + fine).clamp(0.0, 255.0) as u8
        }));
    }
    img
}

fn png(img: DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, ImageFormat::Png)
        .expect("PNG encoding in memory");
    out.into_inner()
}

fn jpeg(img: &RgbImage, quality: u8) -> Vec<u8> {
    let mut out = Vec::new();
    JpegEncoder::new_with_quality(&mut out, quality)
        .encode_image(img)
        .expect("JPEG encoding in memory");
    out
}

fn grey_of(img: &RgbImage) -> GrayImage {
    GrayImage::from_fn(img.width(), img.height(), |x, y| {
        let [r, g, b] = img.get_pixel(x, y).0;
        image::Luma([((u32::from(r) * 299 + u32::from(g) * 587 + u32::from(b) * 114) / 1000) as u8])
    })
}

/// A clean picture of a fixture's usual size (40 to 64 pixels a side).
fn normal(rng: &mut SplitMix64) -> RgbImage {
    let (w, h) = (range(rng, 40, 64), range(rng, 40, 64));
    picture(rng, w, h, 20, 235, 20.0)
}

/// The image fixtures: clean pictures in two classes and planted dark, light, blurry,
/// low-information, stretched, tiny and huge, grey, duplicated and re-encoded images, plus two
/// files that are no images.
pub fn image_fixtures(seed: u64) -> Vec<PlantedImage> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::new();
    let mut push = |kind: &str, bytes: Vec<u8>, ext: &str, planted: Vec<&'static str>| {
        let i = out.len();
        let class = ["cat", "dog"][i % 2];
        out.push(PlantedImage {
            path: format!("{class}/{i:03}_{kind}.{ext}"),
            bytes,
            planted,
        });
    };
    for _ in 0..30 {
        let img = normal(&mut rng);
        push("clean", png(img.into()), "png", vec![]);
    }
    for _ in 0..8 {
        let mut img = normal(&mut rng);
        for p in img.pixels_mut() {
            p.0 = p.0.map(|v| (f64::from(v) * 0.15) as u8);
        }
        push("dark", png(img.into()), "png", vec!["dark"]);
    }
    for _ in 0..8 {
        let (w, h) = (range(&mut rng, 40, 64), range(&mut rng, 40, 64));
        let mut img = picture(&mut rng, w, h, 0, 255, 0.0);
        // Pastel: each channel squeezed into the top of its range (green, the brightest, highest).
        for p in img.pixels_mut() {
            let [r, g, b] = p.0.map(f64::from);
            p.0 = [
                (236.0 + r * 19.0 / 255.0) as u8,
                (248.0 + g * 7.0 / 255.0) as u8,
                (236.0 + b * 19.0 / 255.0) as u8,
            ];
        }
        push("light", png(img.into()), "png", vec!["light"]);
    }
    for _ in 0..8 {
        let img = image::imageops::blur(&normal(&mut rng), 2.5);
        push("blurred", png(img.into()), "png", vec!["blurry"]);
    }
    for _ in 0..8 {
        // Two colours on a random 4 × 4 grid of cells: a few histogram bins only.
        let (w, h) = (range(&mut rng, 40, 64), range(&mut rng, 40, 64));
        let (a, b) = (colour(&mut rng, 60, 200), colour(&mut rng, 60, 200));
        let cells: Vec<bool> = (0..16).map(|_| rng.below(2) == 0).collect();
        let img = RgbImage::from_fn(w, h, |x, y| {
            let c = cells[(y * 4 / h * 4 + x * 4 / w) as usize];
            Rgb((if c { a } else { b }).map(|v| v as u8))
        });
        push("flat", png(img.into()), "png", vec!["low_information"]);
    }
    for i in 0..8 {
        let (long, short) = (range(&mut rng, 60, 64), range(&mut rng, 16, 20));
        let (w, h) = if i % 2 == 0 {
            (long, short)
        } else {
            (short, long)
        };
        let img = picture(&mut rng, w, h, 50, 220, 20.0);
        push(
            "stretched",
            png(img.into()),
            "png",
            vec!["odd_aspect_ratio"],
        );
    }
    for i in 0..8 {
        let side = if i % 2 == 0 {
            range(&mut rng, 6, 8)
        } else {
            range(&mut rng, 200, 220)
        };
        let img = picture(&mut rng, side, side, 50, 220, 20.0);
        let kind = if i % 2 == 0 { "tiny" } else { "huge" };
        push(kind, jpeg(&img, 90), "jpg", vec!["odd_size"]);
    }
    for i in 0..8 {
        let grey = grey_of(&normal(&mut rng));
        // Half as RGB files of grey pixels (only the content tells), half as grey files.
        let bytes = if i % 2 == 0 {
            png(DynamicImage::ImageLuma8(grey).to_rgb8().into())
        } else {
            png(grey.into())
        };
        push("grey", bytes, "png", vec!["grayscale"]);
    }
    for i in 0..6 {
        let img = normal(&mut rng);
        let bytes = png(img.clone().into());
        push("original", bytes.clone(), "png", vec!["exact_duplicate"]);
        // The same pixels: a byte copy, or another lossless format.
        let (copy, ext) = if i % 2 == 0 {
            (bytes, "png")
        } else {
            let mut out = Cursor::new(Vec::new());
            DynamicImage::ImageRgb8(img)
                .write_to(&mut out, ImageFormat::Bmp)
                .expect("BMP encoding in memory");
            (out.into_inner(), "bmp")
        };
        push("copy", copy, ext, vec!["exact_duplicate"]);
    }
    for i in 0..8 {
        let img = normal(&mut rng);
        push(
            "source",
            png(img.clone().into()),
            "png",
            vec!["near_duplicate"],
        );
        // Re-encoded: JPEG at the same size, or resized to 3/4 then JPEG.
        let copy = if i % 2 == 0 {
            jpeg(&img, 75)
        } else {
            let (w, h) = (img.width() * 3 / 4, img.height() * 3 / 4);
            jpeg(
                &image::imageops::resize(&img, w, h, FilterType::Triangle),
                85,
            )
        };
        push("reencoded", copy, "jpg", vec!["near_duplicate"]);
    }
    let mut truncated = png(normal(&mut rng).into());
    truncated.truncate(truncated.len() / 3);
    push("truncated", truncated, "png", vec!["not_analyzed"]);
    push(
        "notes",
        b"these are labelling notes, not an image\n".to_vec(),
        "txt",
        vec!["not_analyzed"],
    );
    out
}

/// `n` clean `side × side` PNG pictures (the benchmark's input).
pub fn bench_images(n: usize, side: u32, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|_| png(picture(&mut rng, side, side, 50, 220, 20.0).into()))
        .collect()
}

const ADJECTIVES: &[&str] = &[
    "quiet", "bright", "heavy", "narrow", "ancient", "gentle", "rapid", "careful", "hollow",
    "golden", "patient", "clever", "distant", "fragile", "honest", "curious", "silent", "sturdy",
    "wooden", "modern", "rusty", "friendly", "tired", "generous",
];
const NOUNS: &[&str] = &[
    "farmer", "bridge", "teacher", "river", "engine", "garden", "painter", "village", "library",
    "mountain", "window", "kitchen", "doctor", "harbor", "journey", "market", "orchard", "student",
    "tower", "bicycle", "neighbor", "forest", "lantern", "festival",
];
const VERBS: &[&str] = &[
    "repaired",
    "visited",
    "painted",
    "noticed",
    "described",
    "followed",
    "cleaned",
    "measured",
    "admired",
    "carried",
    "finished",
    "opened",
    "watched",
    "remembered",
    "explored",
    "protected",
];
const ADVERBS: &[&str] = &[
    "slowly",
    "yesterday",
    "carefully",
    "again",
    "quickly",
    "before noon",
    "every morning",
    "without help",
    "last winter",
    "after dinner",
];

fn pick<'a>(rng: &mut SplitMix64, words: &[&'a str]) -> &'a str {
    words[rng.below(words.len())]
}

/// One English sentence from the vocabulary.
fn sentence(rng: &mut SplitMix64) -> String {
    let s = format!(
        "the {} {} {} the {} {} near the {} {} {}.",
        pick(rng, ADJECTIVES),
        pick(rng, NOUNS),
        pick(rng, VERBS),
        pick(rng, ADJECTIVES),
        pick(rng, NOUNS),
        pick(rng, ADJECTIVES),
        pick(rng, NOUNS),
        pick(rng, ADVERBS),
    );
    let mut chars = s.chars();
    chars
        .next()
        .map(|c| c.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// A clean English text of one to four sentences.
fn english(rng: &mut SplitMix64) -> String {
    let n = 1 + rng.below(4);
    (0..n).map(|_| sentence(rng)).collect::<Vec<_>>().join(" ")
}

fn digits(rng: &mut SplitMix64, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b'0' + rng.below(10) as u8))
        .collect()
}

fn alnum_upper(rng: &mut SplitMix64, n: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    (0..n)
        .map(|_| char::from(CHARS[rng.below(CHARS.len())]))
        .collect()
}

/// A Luhn-valid 16-digit card number, grouped by four.
fn card(rng: &mut SplitMix64) -> String {
    let mut d: Vec<u32> = std::iter::once(4)
        .chain((0..14).map(|_| rng.below(10) as u32))
        .collect();
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            if i % 2 == 0 {
                let y = 2 * x;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    d.push((10 - sum % 10) % 10);
    d.chunks(4)
        .map(|c| {
            c.iter()
                .map(|x| char::from_digit(*x, 10).unwrap_or('0'))
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A German IBAN with a valid mod-97 check, grouped by four.
fn iban(rng: &mut SplitMix64) -> String {
    let bban = digits(rng, 18);
    // Check digits: 98 − (BBAN ‖ "DE00" as digits) mod 97; D = 13, E = 14.
    let numeric = format!("{bban}131400");
    let rem = numeric
        .bytes()
        .fold(0u32, |r, b| (r * 10 + u32::from(b - b'0')) % 97);
    let compact = format!("DE{:02}{bban}", 98 - rem);
    compact
        .as_bytes()
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A PII item of `kind` and a sentence carrying it.
fn pii_text(rng: &mut SplitMix64, kind: &'static str) -> String {
    let first = pick(rng, &["anna", "james", "maria", "peter", "lucy", "omar"]);
    let item = match kind {
        "email" => format!("{first}.{}@example.org", digits(rng, 3)),
        "phone" => format!(
            "({}) {}-{}",
            range(rng, 201, 989),
            digits(rng, 3),
            digits(rng, 4)
        ),
        "credit_card" => card(rng),
        "ssn" => format!(
            "{}-{}-{}",
            range(rng, 101, 665),
            range(rng, 10, 99),
            range(rng, 1000, 9999)
        ),
        "iban" => iban(rng),
        "ip_address" => format!(
            "{}.{}.{}.{}",
            range(rng, 11, 223),
            range(rng, 0, 255),
            range(rng, 0, 255),
            range(rng, 1, 254)
        ),
        _ => match rng.below(3) {
            0 => format!("AKIA{}", alnum_upper(rng, 16)),
            1 => format!("ghp_{}", alnum_upper(rng, 36)),
            _ => format!(
                "-----BEGIN PRIVATE KEY-----\nMII{}\n-----END PRIVATE KEY-----",
                alnum_upper(rng, 40)
            ),
        },
    };
    let lead = match kind {
        "email" => "Please write to",
        "phone" => "You can call the office at",
        "credit_card" => "The order was paid with card",
        "ssn" => "The form lists the social security number",
        "iban" => "Send the refund to the account",
        "ip_address" => "The last login came from the address",
        _ => "The deployment notes still contain the credential",
    };
    format!("{lead} {item} before the meeting. {}", sentence(rng))
}

/// Hand-written sentences in other languages, several scripts.
const FOREIGN: &[&str] = &[
    "Le petit chat dort tranquillement sur le canapé pendant que la pluie tombe dehors.",
    "Nous avons visité le musée de la ville et ensuite nous avons mangé une excellente soupe.",
    "Der alte Mann geht jeden Morgen mit seinem Hund durch den Wald und über die Brücke.",
    "Wir haben gestern Abend lange über die neuen Pläne für das Gemeindehaus gesprochen.",
    "El mercado del pueblo abre temprano y las vendedoras ofrecen frutas frescas del huerto.",
    "Mi hermana trabaja en un hospital grande y siempre llega tarde a la cena familiar.",
    "La nonna prepara la pasta fatta in casa ogni domenica per tutta la famiglia riunita.",
    "O comboio para Lisboa estava atrasado, por isso ficámos a conversar na estação antiga.",
    "De fietsers reden langs het kanaal terwijl de zon langzaam achter de molens verdween.",
    "Старый рыбак каждое утро выходит в море и возвращается домой только поздно вечером.",
    "Dzieci bawiły się w ogrodzie aż do zmroku, a potem babcia zawołała je na kolację.",
    "Kedi bahçede uyurken çocuklar okuldan döndü ve hemen oyun oynamaya başladılar.",
];

/// The text fixtures: clean English texts and planted empties, length outliers, PII of each kind,
/// other languages and near duplicates (exact copies, case and punctuation changes, one word
/// changed).
pub fn text_fixtures(seed: u64) -> Vec<PlantedText> {
    let mut rng = SplitMix64::new(seed);
    let mut out = Vec::new();
    let plain = |text: String, planted: Vec<&'static str>| PlantedText {
        text,
        planted,
        pii_types: vec![],
    };
    for _ in 0..60 {
        out.push(plain(english(&mut rng), vec![]));
    }
    for text in ["", "   ", "\t", "", "  \n "] {
        out.push(plain(text.to_owned(), vec!["empty_text"]));
    }
    for _ in 0..4 {
        let long: Vec<String> = (0..40).map(|_| sentence(&mut rng)).collect();
        out.push(plain(long.join(" "), vec!["text_length"]));
    }
    for text in ["ok", "no.", "yes", "hm"] {
        out.push(plain(text.to_owned(), vec!["text_length"]));
    }
    for kind in [
        "email",
        "phone",
        "credit_card",
        "ssn",
        "iban",
        "ip_address",
        "secret",
    ] {
        for _ in 0..4 {
            out.push(PlantedText {
                text: pii_text(&mut rng, kind),
                planted: vec!["PII"],
                pii_types: vec![kind],
            });
        }
    }
    for text in FOREIGN {
        out.push(plain((*text).to_owned(), vec!["non_english"]));
    }
    for i in 0..8 {
        let original = english(&mut rng);
        let copy = match i % 4 {
            0 => original.clone(),
            1 => original.to_uppercase().replace('.', "!"),
            2 => {
                // One word replaced.
                let mut words: Vec<&str> = original.split(' ').collect();
                let at = 1 + rng.below(words.len() - 2);
                words[at] = "purple";
                words.join(" ")
            }
            _ => format!("{original} Thanks."),
        };
        out.push(plain(original, vec!["near_duplicate"]));
        out.push(plain(copy, vec!["near_duplicate"]));
    }
    out
}

/// `n` texts for the benchmark: English texts, with every 20th carrying PII, every 25th in
/// another language and every 50th empty.
pub fn bench_texts(n: usize, seed: u64) -> Vec<String> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            if i % 50 == 0 {
                String::new()
            } else if i % 25 == 0 {
                FOREIGN[i / 25 % FOREIGN.len()].to_owned()
            } else if i % 20 == 0 {
                pii_text(&mut rng, "email")
            } else {
                english(&mut rng)
            }
        })
        .collect()
}

/// A CSV field, always quoted.
fn field(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The images' truth table: `path,planted` (planted types joined by `;`).
pub fn images_csv(images: &[PlantedImage]) -> String {
    let mut out = String::from("path,planted\n");
    for image in images {
        out += &format!(
            "{},{}\n",
            field(&image.path),
            field(&image.planted.join(";"))
        );
    }
    out
}

/// The texts with their truth: `text,planted,pii_types` (lists joined by `;`).
pub fn texts_csv(texts: &[PlantedText]) -> String {
    let mut out = String::from("text,planted,pii_types\n");
    for text in texts {
        out += &format!(
            "{},{},{}\n",
            field(&text.text),
            field(&text.planted.join(";")),
            field(&text.pii_types.join(";"))
        );
    }
    out
}

/// The seed of the committed fixtures.
pub const FIXTURE_SEED: u64 = 6;
