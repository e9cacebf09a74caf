//! `proxy`: JPEG proxies of the published plate, `v###_jpg/<plate>.####.jpg`,
//! plus a set fitted to `media.proxy.small_width` (2048) in `v###_jpg_2k/` when the
//! plate is wider (the original's `_jpg_2k` folder).
//!
//! Colour goes through the configured colour table: the scan colour space's input
//! transform to linear light, the matrix to Rec.709 primaries and the display
//! encoding (`media.proxy.display`, else `colour.display`), exactly as the
//! thumbnails ([`crate::thumbnail::render`]; the 2K set is resized in linear light).
//! JPEG quality and chroma subsampling come from `media.proxy`.
//!
//! Frames stream in batches of `media.jobs`; each JPEG is written to an iom
//! temporary name, fsynced and renamed. A re-run skips proxies that exist, read
//! back as complete JPEGs and have the expected size; anything else is rendered
//! again (rendering is deterministic: same input, same bytes). Every still frame
//! is structure-checked before the first proxy is written; a frame that fails to
//! decode later removes the proxies this run wrote, so a permanent failure leaves
//! no partial set behind.
//!
//! Gaps (frames the graph let through missing): `black` writes a black frame,
//! `previous` repeats the proxy before (the one after, for leading gaps).

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde_json::json;

use super::media::{self as m, FrameSrc};
use super::{hash_file, hex64, StepContext, StepError, StepOutput};
use crate::colour::HalfDisplay;
use crate::media::RgbImage;
use crate::store::{fsync_dir, OutputFile};
use crate::task::{GapPolicy, PlateOutput, StepKind, TaskMessage};
use crate::thumbnail;

/// A rendered frame's files: (temporary file, destination, record).
type Rendered = Vec<(PathBuf, PathBuf, OutputFile)>;

/// One proxy set: a folder and a picture size.
#[derive(Debug, Clone)]
struct Set {
    dir: PathBuf,
    width: u32,
    height: u32,
}

fn proxy_path(set: &Set, output: &PlateOutput, n: i64) -> PathBuf {
    set.dir.join(format!(
        "{}.{n:0width$}.jpg",
        output.plate_name,
        width = output.pad
    ))
}

/// A proxy that is there, complete and of the expected size.
fn complete(path: &Path, set: &Set) -> bool {
    matches!(crate::media::jpeg::read_info(path), Ok(i) if i.width == set.width && i.height == set.height)
        && crate::media::jpeg::verify(path).is_ok()
}

/// The proxy sets of a `w × h` plate.
fn sets(output: &PlateOutput, w: u32, h: u32, small_width: u32) -> Vec<Set> {
    let mut v = vec![Set {
        dir: output.jpg_dir.clone(),
        width: w,
        height: h,
    }];
    if small_width > 0 && w > small_width {
        let (sw, sh) = thumbnail::fit(w, h, 1.0, small_width, h);
        v.push(Set {
            dir: output.jpg_2k_dir.clone(),
            width: sw,
            height: sh,
        });
    }
    v
}

/// Runs the proxy step.
pub fn run(
    msg: &TaskMessage,
    output: &PlateOutput,
    colorspace: &str,
    ctx: &StepContext,
) -> Result<StepOutput, StepError> {
    let cfg = ctx.settings.media.proxy.clone();
    m::limit_heap_retention();
    if !(1..=100).contains(&cfg.quality) {
        return Err(StepError::permanent(format!(
            "bad setting `media.proxy.quality`: {} is outside 1..=100",
            cfg.quality
        )));
    }
    // Settings first: a bad subsampling fails before any work.
    m::encode_jpeg(
        &[0; 16 * 16 * 3],
        16,
        16,
        cfg.quality,
        &cfg.subsampling,
        Path::new("settings check"),
    )?;
    let pipeline = m::pipeline(ctx, colorspace, &cfg.display)?;
    let plate = m::plate(msg, output, ctx)?;
    let (w, h, _) = m::plate_size(&plate)?;
    let sets = sets(output, w, h, cfg.small_width);
    let task = &msg.task_id;
    let mut stale = 0;
    for s in &sets {
        fs::create_dir_all(&s.dir).map_err(|e| StepError::io("create folder", &s.dir, &e))?;
        stale += super::remove_stale_temps(&s.dir, task)?;
    }

    // What is left to do: frames with an output missing or incomplete.
    let todo: Vec<usize> = plate
        .frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.src != FrameSrc::Missing)
        .filter(|(_, f)| {
            sets.iter()
                .any(|s| !complete(&proxy_path(s, output, f.number), s))
        })
        .map(|(i, _)| i)
        .collect();
    let skipped = plate.frames.len() - plate.missing().len() - todo.len();
    if !todo.is_empty() && plate.movie.is_none() {
        m::verify_frames(&plate, ctx)?;
    }

    let mut records: BTreeMap<PathBuf, OutputFile> = BTreeMap::new();
    let mut created: Vec<PathBuf> = Vec::new();
    let result = render_all(
        msg,
        output,
        ctx,
        &plate,
        &pipeline,
        &sets,
        &todo,
        &mut records,
        &mut created,
    )
    .and_then(|()| {
        fill_gaps(
            msg,
            output,
            &plate,
            &pipeline,
            &sets,
            &cfg,
            &mut records,
            &mut created,
        )
    });
    if let Err(e) = result {
        if matches!(e, StepError::Permanent { .. }) {
            for p in &created {
                let _ = fs::remove_file(p);
            }
        }
        return Err(e);
    }
    for s in &sets {
        fsync_dir(&s.dir).map_err(|e| StepError::io("fsync folder", &s.dir, &e))?;
    }

    // Records for every proxy, in order (hashing the skipped ones).
    let mut outputs = Vec::new();
    for s in &sets {
        for f in &plate.frames {
            let p = proxy_path(s, output, f.number);
            let rec = match records.remove(&p) {
                Some(r) => r,
                None => {
                    let (size, h) = hash_file(&p).map_err(|e| StepError::io("read", &p, &e))?;
                    OutputFile {
                        path: p,
                        size,
                        xxh3: hex64(h),
                    }
                }
            };
            outputs.push(rec);
        }
    }
    let written: u64 = created.len() as u64;
    crate::metrics::observe_io(
        StepKind::Proxy,
        0,
        outputs.iter().map(|o| o.size).sum(),
        written,
    );
    Ok(StepOutput {
        outputs,
        summary: json!({
            "frames": plate.frames.len(),
            "rendered": todo.len(),
            "skipped": skipped,
            "missing": super::ranges(&plate.missing()).iter().map(|&(a, b)| [a, b]).collect::<Vec<_>>(),
            "gap_policy": format!("{:?}", plate.gap_policy).to_lowercase(),
            "sets": sets.iter().map(|s| json!({"dir": s.dir.display().to_string(), "width": s.width, "height": s.height})).collect::<Vec<_>>(),
            "colorspace": pipeline.colourspace(),
            "display": pipeline.display().name(),
            "quality": cfg.quality,
            "subsampling": cfg.subsampling,
            "stale_temps_removed": stale,
        }),
    })
}

fn is_exr(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .and_then(crate::media::MediaFormat::from_extension)
        == Some(crate::media::MediaFormat::Exr)
}

/// A frame must have the size of the full-size set (the plate's first frame).
fn check_size(
    output: &PlateOutput,
    full: &Set,
    number: i64,
    (width, height): (u32, u32),
) -> Result<(), StepError> {
    if (width, height) == (full.width, full.height) {
        return Ok(());
    }
    Err(StepError::permanent(format!(
        "{}: frame {number} is {width}×{height} but the plate is {}×{}; the frames of one plate must share a size",
        output.frames_dir.display(),
        full.width,
        full.height
    )))
}

/// Renders one decoded frame into every set: (temporary file, destination, record).
fn render_frame(
    msg: &TaskMessage,
    output: &PlateOutput,
    pipeline: &crate::colour::Pipeline,
    sets: &[Set],
    number: i64,
    mut img: RgbImage,
    cfg: &crate::config::ProxySettings,
) -> Result<Rendered, StepError> {
    let mut out = Vec::with_capacity(sets.len());
    check_size(output, &sets[0], number, (img.width, img.height))?;
    // Proxies keep the stored pixels (no anamorphic unsqueeze), like the original.
    img.pixel_aspect = 1.0;
    for s in sets {
        let dest = proxy_path(s, output, number);
        let pic = thumbnail::render(&img, pipeline, s.width, s.height);
        match write_proxy(msg, dest, pic.as_raw(), s, cfg) {
            Ok(file) => out.push(file),
            Err(e) => {
                for (t, _, _) in &out {
                    let _ = fs::remove_file(t);
                }
                return Err(e);
            }
        }
    }
    Ok(out)
}

/// A full-size proxy of a half-float EXR frame through the colour tables
/// (`None`: the frame is not all half, use the float path). The tables turn
/// each decoded block into 8-bit codes in place; the planes are then interleaved
/// for the JPEG encoder.
fn render_half(
    msg: &TaskMessage,
    output: &PlateOutput,
    table: &HalfDisplay<u8>,
    set: &Set,
    number: i64,
    path: &Path,
    cfg: &crate::config::ProxySettings,
) -> Result<Option<Rendered>, StepError> {
    let convert = |[r, g, b]: [&mut [u16]; 3]| {
        for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
            let px = table.pixel([*r, *g, *b]);
            (*r, *g, *b) = (px[0].into(), px[1].into(), px[2].into());
        }
    };
    let Some(pic) =
        crate::media::exr::read_half_planes(path, &convert).map_err(StepError::from_error)?
    else {
        return Ok(None);
    };
    check_size(output, set, number, (pic.width, pic.height))?;
    let w = pic.width as usize;
    let mut rgb = vec![0u8; pic.planes[0].len() * 3];
    let [pr, pg, pb] = &pic.planes;
    rgb.par_chunks_mut(w.max(1) * 3)
        .zip(pr.par_chunks(w.max(1)))
        .zip(pg.par_chunks(w.max(1)))
        .zip(pb.par_chunks(w.max(1)))
        .for_each(|(((d, r), g), b)| {
            for (((px, &r), &g), &b) in d.chunks_exact_mut(3).zip(r).zip(g).zip(b) {
                // The tables wrote 8-bit codes.
                px.copy_from_slice(&[r as u8, g as u8, b as u8]);
            }
        });
    drop(pic);
    let dest = proxy_path(set, output, number);
    Ok(Some(vec![write_proxy(msg, dest, &rgb, set, cfg)?]))
}

/// Encodes 8-bit RGB of `set`'s size as the JPEG `dest` and writes it to an iom
/// temporary name: (temporary file, destination, record).
fn write_proxy(
    msg: &TaskMessage,
    dest: PathBuf,
    rgb: &[u8],
    set: &Set,
    cfg: &crate::config::ProxySettings,
) -> Result<(PathBuf, PathBuf, OutputFile), StepError> {
    let bytes = m::encode_jpeg(
        rgb,
        set.width,
        set.height,
        cfg.quality,
        &cfg.subsampling,
        &dest,
    )?;
    let rec = OutputFile {
        path: dest.clone(),
        size: bytes.len() as u64,
        xxh3: hex64(xxhash_rust::xxh3::xxh3_64(&bytes)),
    };
    let tmp = m::write_temp(&dest, &bytes, &msg.task_id, msg.attempt)?;
    Ok((tmp, dest, rec))
}

#[allow(clippy::too_many_arguments)]
fn render_all(
    msg: &TaskMessage,
    output: &PlateOutput,
    ctx: &StepContext,
    plate: &m::Plate,
    pipeline: &crate::colour::Pipeline,
    sets: &[Set],
    todo: &[usize],
    records: &mut BTreeMap<PathBuf, OutputFile>,
    created: &mut Vec<PathBuf>,
) -> Result<(), StepError> {
    let pool = m::pool(ctx, StepKind::Proxy)?;
    let cfg = &ctx.settings.media.proxy;
    let table = match (plate.movie.is_none(), sets) {
        (true, [_full]) => pipeline.half_display::<u8>(),
        _ => None,
    };
    for batch in todo.chunks(m::jobs(ctx)) {
        ctx.check_cancel()?;
        let results: Vec<Result<Rendered, StepError>> = pool.install(|| {
            // One full-size set of a still plate: half-float EXR frames take the
            // table path (no float image); the rest (and any frame that is not
            // all half) the float path below.
            let mut fast: Vec<Option<Result<Rendered, StepError>>> = batch
                .par_iter()
                .map(|&i| {
                    let f = &plate.frames[i];
                    match (&f.src, &table) {
                        (FrameSrc::File(p), Some(t)) if is_exr(p) => {
                            render_half(msg, output, t, &sets[0], f.number, p, cfg).transpose()
                        }
                        _ => None,
                    }
                })
                .collect();
            let rest: Vec<usize> = batch
                .iter()
                .zip(&fast)
                .filter(|(_, r)| r.is_none())
                .map(|(&i, _)| i)
                .collect();
            if rest.is_empty() {
                return fast.into_iter().flatten().collect();
            }
            let imgs = match m::decode_batch(plate, &rest) {
                Ok(v) => v,
                Err(e) => return vec![Err(e)],
            };
            let mut slow: Vec<Result<Rendered, StepError>> = imgs
                .into_par_iter()
                .zip(rest.par_iter())
                .map(|(img, &i)| {
                    let number = plate.frames[i].number;
                    let img = img.ok_or_else(|| {
                        StepError::permanent(format!("frame {number} vanished while rendering"))
                    })?;
                    render_frame(msg, output, pipeline, sets, number, img, cfg)
                })
                .collect();
            // Back into batch order.
            slow.reverse();
            fast.iter_mut()
                .filter_map(|r| match r {
                    Some(r) => Some(std::mem::replace(r, Ok(Vec::new()))),
                    None => slow.pop(),
                })
                .collect()
        });
        // Rename what rendered (in order); on the first error remove the rest's temporaries.
        let mut first_err = None;
        for r in results {
            match r {
                Ok(files) if first_err.is_none() => {
                    for (tmp, dest, rec) in files {
                        if let Err(e) = fs::rename(&tmp, &dest) {
                            let _ = fs::remove_file(&tmp);
                            if first_err.is_none() {
                                first_err = Some(StepError::io("rename into place", &dest, &e));
                            }
                            continue;
                        }
                        created.push(dest.clone());
                        records.insert(dest, rec);
                    }
                }
                Ok(files) => {
                    for (tmp, _, _) in files {
                        let _ = fs::remove_file(&tmp);
                    }
                }
                Err(e) => {
                    if first_err.is_none() {
                        first_err = Some(e);
                    }
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn fill_gaps(
    msg: &TaskMessage,
    output: &PlateOutput,
    plate: &m::Plate,
    pipeline: &crate::colour::Pipeline,
    sets: &[Set],
    cfg: &crate::config::ProxySettings,
    records: &mut BTreeMap<PathBuf, OutputFile>,
    created: &mut Vec<PathBuf>,
) -> Result<(), StepError> {
    let missing: Vec<usize> = plate
        .frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.src == FrameSrc::Missing)
        .map(|(i, _)| i)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    for s in sets {
        let mut black: Option<Vec<u8>> = None;
        for &i in &missing {
            let dest = proxy_path(s, output, plate.frames[i].number);
            if complete(&dest, s) {
                continue;
            }
            let bytes = match plate.gap_policy {
                GapPolicy::Previous => {
                    let before = plate.frames[..i]
                        .iter()
                        .rev()
                        .find(|f| f.src != FrameSrc::Missing);
                    let after = plate.frames[i..]
                        .iter()
                        .find(|f| f.src != FrameSrc::Missing);
                    let from = before.or(after).map(|f| proxy_path(s, output, f.number));
                    match from {
                        Some(p) => fs::read(&p).map_err(|e| StepError::io("read", &p, &e))?,
                        None => return Err(StepError::permanent("no published frame to repeat")),
                    }
                }
                _ => {
                    if black.is_none() {
                        let pic = thumbnail::render(
                            &RgbImage::black(s.width, s.height),
                            pipeline,
                            s.width,
                            s.height,
                        );
                        black = Some(m::encode_jpeg(
                            pic.as_raw(),
                            s.width,
                            s.height,
                            cfg.quality,
                            &cfg.subsampling,
                            &dest,
                        )?);
                    }
                    black.clone().unwrap_or_default()
                }
            };
            let tmp = m::write_temp(&dest, &bytes, &msg.task_id, msg.attempt)?;
            if let Err(e) = fs::rename(&tmp, &dest) {
                let _ = fs::remove_file(&tmp);
                return Err(StepError::io("rename into place", &dest, &e));
            }
            created.push(dest.clone());
            records.insert(
                dest.clone(),
                OutputFile {
                    path: dest,
                    size: bytes.len() as u64,
                    xxh3: hex64(xxhash_rust::xxh3::xxh3_64(&bytes)),
                },
            );
        }
    }
    Ok(())
}
