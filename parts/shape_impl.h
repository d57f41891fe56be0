/* shape_impl: in progress */
