im_functions::http_function_main!();
