/* safetensors_impl: in progress */
