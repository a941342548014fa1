//! Thread priorities: the agent's own work (parsing, events, shipping,
//! the admin endpoints, shadow scoring and its ONNX Runtime threads) runs
//! below the champion's traffic, so that when the cores are all busy the
//! traffic runs first and that work waits, then sheds (counted).

use crate::config::Background;

/// The nice value of the threads that do the agent's own work under
/// `background_scheduling: nice`.
pub const BACKGROUND_NICE: i32 = 10;

impl Background {
    /// Applies to the calling thread; threads it starts inherit it. Going
    /// back is not allowed without privileges, so this is done once per
    /// thread, at its start. A refusal is logged and the thread runs on at
    /// its priority (the traffic is not at stake).
    pub fn apply(self) {
        #[cfg(target_os = "linux")]
        {
            use thread_priority::unix::{
                set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
                ThreadSchedulePolicy,
            };
            let result = match self {
                Background::Idle => set_thread_priority_and_policy(
                    thread_native_id(),
                    thread_priority::ThreadPriority::Min,
                    ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle),
                )
                .map_err(|e| format!("{e:?}")),
                Background::Nice => set_nice(BACKGROUND_NICE).map_err(|e| e.to_string()),
            };
            if let Err(e) = result {
                tracing::warn!("cannot lower the priority of a background thread ({self:?}): {e}");
            }
        }
    }
}

/// Sets the calling thread's nice value (threads it starts inherit it).
/// Below the current value needs `CAP_SYS_NICE` (or `RLIMIT_NICE`).
pub fn set_nice(nice: i32) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let tid = rustix::thread::gettid();
        rustix::process::setpriority_process(Some(tid), nice).map_err(std::io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = nice;
        Ok(())
    }
}

/// ONNX Runtime's intra-op threads (a shadow with `threads` above 1),
/// started at the background priority: left to itself ONNX Runtime starts
/// them from the thread that loads the model, at the traffic's priority.
pub struct PoolThreads(pub Background);

impl ort::environment::ThreadManager for PoolThreads {
    type Thread = std::thread::JoinHandle<()>;

    fn create(&self, work: impl FnOnce() + Send + 'static) -> ort::Result<Self::Thread> {
        let background = self.0;
        std::thread::Builder::new()
            .name("shadow-pool".to_string())
            .spawn(move || {
                background.apply();
                work();
            })
            .map_err(|e| ort::Error::new(format!("cannot start an inference thread: {e}")))
    }

    fn join(thread: Self::Thread) -> ort::Result<()> {
        let _ = thread.join();
        Ok(())
    }
}
