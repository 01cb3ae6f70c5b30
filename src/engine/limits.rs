//! Bounds on what the user may ask of the engine: shapes it can allocate, threads the machine has.

/// The most values one sample may have: 4×2048×2048 latents or 3×2048×2048 pixels fit, a typo does not.
pub const MAX_SAMPLE_VALUES: usize = 1 << 24;

/// Checks one sample's C, H, W: each at least 1 and at most [`MAX_SAMPLE_VALUES`] in all.
pub fn check_sample_shape(shape: [usize; 3]) -> Result<(), String> {
    let [c, h, w] = shape;
    if shape.contains(&0) {
        return Err(format!(
            "sample_shape [{c}, {h}, {w}] has a zero; give channels, height and width, each at least 1"
        ));
    }
    let values = c.checked_mul(h).and_then(|v| v.checked_mul(w));
    match values {
        Some(v) if v <= MAX_SAMPLE_VALUES => Ok(()),
        _ => Err(format!(
            "sample_shape [{c}, {h}, {w}] is too large: one sample may have at most {MAX_SAMPLE_VALUES} values (e.g. [4, 2048, 2048])"
        )),
    }
}

/// Reads a sample shape given as C, H, W or, for a video model, C, F, H, W: one frame's C, H, W and the frames,
/// each at least 1 and the whole at most [`MAX_SAMPLE_VALUES`].
pub fn frame_shape(dims: &[usize]) -> Result<([usize; 3], Option<usize>), String> {
    let (shape, frames) = match *dims {
        [c, h, w] => ([c, h, w], None),
        [c, f, h, w] => ([c, h, w], Some(f)),
        _ => {
            return Err(format!(
                "sample_shape {dims:?} has {} sizes; give channels, height and width [C, H, W], or channels, \
                 frames, height and width [C, F, H, W] for a video model",
                dims.len()
            ));
        }
    };
    if dims.contains(&0) {
        return Err(format!(
            "sample_shape {dims:?} has a zero; give each size at least 1"
        ));
    }
    let values = dims.iter().try_fold(1usize, |v, &d| v.checked_mul(d));
    match values {
        Some(v) if v <= MAX_SAMPLE_VALUES => Ok((shape, frames)),
        _ => Err(format!(
            "sample_shape {dims:?} is too large: one sample may have at most {MAX_SAMPLE_VALUES} values (e.g. [4, 2048, 2048])"
        )),
    }
}

/// This machine's memory in bytes, where the system says.
pub fn physical_memory() -> Option<u64> {
    // SAFETY: sysconf only reads system constants.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    (pages > 0 && size > 0).then(|| pages as u64 * size as u64)
}

/// Refuses a run whose held values (`values` f32s: `what`) would not fit in half of this machine's memory.
pub fn check_memory(values: u128, what: &str) -> Result<(), String> {
    let Some(memory) = physical_memory() else {
        return Ok(());
    };
    let bytes = values * 4;
    if bytes <= u128::from(memory / 2) {
        return Ok(());
    }
    let gib = |b: u128| b as f64 / f64::from(1u32 << 30);
    Err(format!(
        "{what} need {:.1} GiB of memory, more than half of this machine's {:.1} GiB; lower `batch`, \
         `seeds` or `sample_shape`, or run fewer cells with --only",
        gib(bytes),
        gib(u128::from(memory))
    ))
}

/// The cores this process may use (1 when the system does not say).
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// Caps a thread count at the cores available; the message says so when it had to.
pub fn cap_threads(requested: usize) -> (usize, Option<String>) {
    let cores = available_cores();
    if requested <= cores {
        return (requested, None);
    }
    (
        cores,
        Some(format!(
            "threads = {requested} is more than the {cores} cores this machine can use; using {cores}"
        )),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_with_zeros_or_too_many_values_are_refused() {
        assert!(check_sample_shape([1, 16, 16]).is_ok());
        assert!(check_sample_shape([4, 2048, 2048]).is_ok());
        assert!(
            check_sample_shape([0, 16, 16])
                .unwrap_err()
                .contains("has a zero")
        );
        assert!(
            check_sample_shape([3, 4096, 4096])
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            check_sample_shape([usize::MAX, 2, 2])
                .unwrap_err()
                .contains("too large")
        );
    }

    #[test]
    fn threads_are_capped_at_the_cores() {
        let cores = available_cores();
        assert_eq!(cap_threads(1), (1, None));
        let (n, note) = cap_threads(100_000);
        assert_eq!(n, cores);
        assert!(note.unwrap().contains("more than the"));
    }
}
