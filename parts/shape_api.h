/* shape_api: in progress */
