/* nn_impl: in progress */
