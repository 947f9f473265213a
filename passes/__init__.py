"""Built-in passes, one module per pass. Importing this package registers them all."""

from importlib import import_module

_MODULES = ("cleanup", "fold_constants", "fold_shape_chains", "fold_conv_bn", "replace_custom_ops",
            "eliminate_neutral_ops", "drop_default_inputs", "fuse_matmul_add", "upgrade_opset", "lower_einsum",
            "fold_control_flow", "merge_duplicates", "collapse_shape_ops", "fold_dequantize")

for _name in _MODULES:
    import_module(f"passes.{_name}")
