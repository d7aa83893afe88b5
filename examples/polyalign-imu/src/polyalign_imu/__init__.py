"""polyalign-imu: an accelerometer encoder plugin for polyalign."""

from polyalign import hookimpl


@hookimpl
def register_encoders(register):
    """Called once by polyalign when it loads plugins."""
    from .encoder import ImuConfig, build_imu

    register("imu", build_imu, config=ImuConfig,
             help="Accelerometer recordings (.csv or .npy, samples x axes) into a 1-D CNN")
