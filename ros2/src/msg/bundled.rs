//! The interface definitions compiled into the crate from `ros2/interfaces/`.

static FILES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/bundled.rs"));

/// The bundled files as `(relative path, text)`, e.g.
/// `("sensor_msgs/msg/BatteryState.msg", "...")`.
pub fn bundled_files() -> &'static [(&'static str, &'static str)] {
    FILES
}
