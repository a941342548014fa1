//! ONNX models through ort, with the ONNX Runtime library loaded at run
//! time (`load-dynamic`): from the config, else `ORT_DYLIB_PATH`. A model
//! takes one float input `[N, F]` and gives named output tensors, read by
//! the same code as model server responses (`adapters::outputs_from_tensors`).

use std::path::Path;

use driftwatch_telemetry::onnx::Environment;
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef, ValueType};

use crate::adapters::{Data, Tensor};
use crate::config::{Background, Device};
use crate::threads::PoolThreads;

/// The process's ONNX Runtime environment (loaded once; shared with the
/// collector through `driftwatch_telemetry::onnx`).
pub use driftwatch_telemetry::onnx::environment;

pub struct OnnxModel {
    session: Session,
    input: String,
    /// Columns of the input, when the model fixes them.
    pub width: Option<usize>,
    /// The execution provider in use (`CUDA` or `CPU`).
    pub provider: &'static str,
}

impl OnnxModel {
    /// Loads a model; with `Device::Cuda` the CUDA execution provider is
    /// tried and, when it cannot start, the CPU is used with a warning.
    pub fn load(
        env: &Environment,
        path: &Path,
        input: Option<&str>,
        device: Device,
        threads: usize,
        background: Option<Background>,
    ) -> Result<OnnxModel, String> {
        let what = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
        let bytes = std::fs::read(path).map_err(|e| what(&e))?;
        let build = |cuda: bool| -> Result<Session, String> {
            let mut b = Session::builder(env).map_err(|e| what(&e))?;
            if cuda {
                b = b
                    .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                    .map_err(|e| what(&e))?;
            }
            b = b.with_intra_threads(threads).map_err(|e| what(&e))?;
            if let (Some(background), true) = (background, threads > 1) {
                // Its pool's threads at the background priority, and
                // asleep between batches instead of spinning on a core.
                b = b
                    .with_thread_manager(PoolThreads(background))
                    .map_err(|e| what(&e))?
                    .with_intra_op_spinning(false)
                    .map_err(|e| what(&e))?;
            }
            b.commit_from_memory(&bytes).map_err(|e| what(&e))
        };
        let (session, provider) = match device {
            Device::Cpu => (build(false)?, "CPU"),
            Device::Cuda => match build(true) {
                Ok(s) => (s, "CUDA"),
                Err(e) => {
                    tracing::warn!("the CUDA execution provider is not available ({e}); the shadow model runs on the CPU");
                    (build(false)?, "CPU")
                }
            },
        };
        let first = session
            .inputs()
            .first()
            .ok_or_else(|| what(&"the model has no input"))?;
        let outlet = match input {
            Some(name) => session
                .inputs()
                .iter()
                .find(|i| i.name() == name)
                .ok_or_else(|| what(&format!("the model has no input `{name}`")))?,
            None => first,
        };
        let width = match outlet.dtype() {
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape,
                ..
            } => match shape.len() {
                2 if shape[1] > 0 => Some(shape[1] as usize),
                2 => None,
                n => {
                    return Err(what(&format!(
                        "input `{}` has {n} dimensions, expected [N, F]",
                        outlet.name()
                    )))
                }
            },
            other => {
                return Err(what(&format!(
                    "input `{}` is {other:?}; driftwatch feeds one float32 [N, F] tensor",
                    outlet.name()
                )))
            }
        };
        let input = outlet.name().to_string();
        Ok(OnnxModel {
            session,
            input,
            width,
            provider,
        })
    }

    /// Runs rows of `width` floats; every output comes back as a tensor.
    pub fn run(&mut self, rows: &[Vec<f32>]) -> Result<Vec<Tensor>, String> {
        let width = rows.first().map_or(0, Vec::len);
        let flat: Vec<f32> = rows.iter().flat_map(|r| r.iter().copied()).collect();
        let array = ndarray::Array2::from_shape_vec((rows.len(), width), flat)
            .map_err(|e| format!("rows of different lengths: {e}"))?;
        let value = TensorRef::from_array_view(&array).map_err(|e| e.to_string())?;
        let outputs = self
            .session
            .run(ort::inputs![self.input.as_str() => value])
            .map_err(|e| e.to_string())?;
        let mut tensors = Vec::new();
        for (name, v) in outputs.iter() {
            let (shape, data) = if let Ok((s, d)) = v.try_extract_tensor::<f32>() {
                (
                    s.to_vec(),
                    Data::Num(d.iter().map(|x| f64::from(*x)).collect()),
                )
            } else if let Ok((s, d)) = v.try_extract_tensor::<i64>() {
                (s.to_vec(), Data::Num(d.iter().map(|x| *x as f64).collect()))
            } else if let Ok((s, d)) = v.try_extract_tensor::<f64>() {
                (s.to_vec(), Data::Num(d.to_vec()))
            } else if let Ok((s, d)) = v.try_extract_strings() {
                (s.to_vec(), Data::Str(d))
            } else {
                // Sequences and maps (zipmap): not read; the README says to export with zipmap off.
                continue;
            };
            tensors.push(Tensor {
                name: name.to_string(),
                shape: shape.iter().map(|d| (*d).max(0) as usize).collect(),
                data,
            });
        }
        Ok(tensors)
    }
}
