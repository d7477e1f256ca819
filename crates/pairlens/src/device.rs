//! Device names as users write them (`cpu`, `cuda`, `cuda:1`).

use candle_core::Device;

use crate::{Error, Result};

/// The device a name stands for: `cpu`, `cuda` (the first GPU) or `cuda:N`. CUDA needs a build
/// with the `cuda` feature and a GPU; either missing is an error that says so.
pub fn parse_device(name: &str) -> Result<Device> {
    let bad = |msg: String| Error::InvalidArgument(format!("device {name:?}: {msg}"));
    let ordinal = match name.trim() {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => 0,
        other => match other.strip_prefix("cuda:") {
            Some(n) => n
                .parse::<usize>()
                .map_err(|_| bad(format!("{n:?} is not a GPU number")))?,
            None => return Err(bad("expected cpu, cuda or cuda:N".into())),
        },
    };
    if !candle_core::utils::cuda_is_available() {
        return Err(bad(
            "this pairlens was built without CUDA (build it with `--features cuda`)".into(),
        ));
    }
    Device::new_cuda(ordinal).map_err(|e| bad(format!("cannot open GPU {ordinal}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        let e = parse_device("tpu").unwrap_err().to_string();
        assert!(e.contains("expected cpu, cuda or cuda:N"), "{e}");
        let e = parse_device("cuda:x").unwrap_err().to_string();
        assert!(e.contains("not a GPU number"), "{e}");
        if !candle_core::utils::cuda_is_available() {
            let e = parse_device("cuda:0").unwrap_err().to_string();
            assert!(e.contains("built without CUDA"), "{e}");
        }
    }
}
